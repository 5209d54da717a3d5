//! Organizations, pipelines and tasks in a write transaction: interning organizations, finding
//! and creating entities (visible to the rest of the transaction at once, published to the cache
//! once committed), registering pipelines and starting pipeline runs.

use redb::ReadableTable;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Batch, Verdict};
use crate::error::{Error, Result};
use crate::model::{
    EntityKind, OrgId, PendingTaskRun, PipelineDefinition, PipelineId, PipelineRunId,
    RegisterOutcome, RunState, TaskId, TaskRunId, TaskType,
};
use crate::store::records::{EntityDetail, EntityKey, RunRecord, RunRef, TaskRunHome};
use crate::store::tables::{
    EntityId, INDEX_KEY_LEN, OrgIndex, PENDING_LEN, index_key, meta, pipeline_name_key,
    pipeline_task_key, scoped_key,
};
use crate::time::Timestamp;

impl Batch<'_> {
    /// The organization's index, if it has one (it gets one with its first pipeline).
    pub(super) fn find_org_index(&self, org: OrgId) -> Result<Option<OrgIndex>> {
        if let Some(index) = self.created.orgs.get(&org) {
            return Ok(Some(*index));
        }
        if let Some(index) = self.cache.org_index(org) {
            return Ok(Some(index));
        }
        let Some(index) = self.t.org_index.get(org.as_bytes())? else {
            return Ok(None);
        };
        let index = OrgIndex(index.value());
        self.cache.insert_org(org, index);
        Ok(Some(index))
    }

    pub(super) fn ensure_org_index(&mut self, org: OrgId) -> Result<OrgIndex> {
        if let Some(index) = self.find_org_index(org)? {
            return Ok(index);
        }
        let next = match self.counters.next_org_index {
            Some(next) => next,
            None => u32::from_le_bytes(self.counter(meta::NEXT_ORG_INDEX, 1u32.to_le_bytes())?),
        };
        let following = next
            .checked_add(1)
            .ok_or_else(|| Error::Unavailable("no more organization indexes".into()))?;
        self.counters.next_org_index = Some(following);
        self.t.org_index.insert(org.as_bytes(), next)?;
        self.created.orgs.insert(org, OrgIndex(next));
        Ok(OrgIndex(next))
    }

    /// The entity with this UUID in the organization, as this transaction sees it.
    pub(super) fn entity(&self, org: Option<OrgIndex>, uuid: Uuid) -> Result<Option<EntityKey>> {
        let Some(org) = org else {
            return Ok(None);
        };
        if let Some(key) = self.created.entities.get(&(org, uuid)) {
            return Ok(Some(*key));
        }
        if let Some(key) = self.cache.get(org, &uuid) {
            return Ok(Some(key));
        }
        let Some(bytes) = self.t.entity_keys.get(&scoped_key(org, uuid.as_bytes()))? else {
            return Ok(None);
        };
        let key = EntityKey::decode(bytes.value())?;
        // Not created by this transaction, so it is committed: safe to share.
        self.cache.insert(uuid, key);
        Ok(Some(key))
    }

    fn allocate_entity_id(&mut self) -> Result<EntityId> {
        let next = match self.counters.next_entity_id {
            Some(next) => next,
            None => u32::from_le_bytes(self.counter(meta::NEXT_ENTITY_ID, 1u32.to_le_bytes())?),
        };
        let following = next
            .checked_add(1)
            .ok_or_else(|| Error::Unavailable("no more pipeline or task ids".into()))?;
        self.counters.next_entity_id = Some(following);
        Ok(EntityId(next))
    }

    pub(super) fn create_entity(
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
        self.t
            .entity_keys
            .insert(&scoped_key(org.1, uuid.as_bytes()), &key.encode())?;
        self.t.entities.insert(id.0, detail.encode().as_slice())?;
        if kind == EntityKind::Pipeline {
            let name_key = pipeline_name_key(org.1, &detail.name, uuid.as_bytes());
            self.t.pipeline_names.insert(name_key.as_slice(), id.0)?;
        }
        if let Some(pipeline) = pipeline {
            self.t
                .pipeline_tasks
                .insert(&pipeline_task_key(pipeline, id), ())?;
        }
        self.created.entities.insert((org.1, uuid), key);
        Ok(key)
    }

    pub(super) fn ensure_pipeline(
        &mut self,
        pipeline: PipelineId,
        org: OrgId,
    ) -> Result<(EntityKey, bool)> {
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

    pub(super) fn ensure_task(
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

    pub(super) fn check_register(&mut self, definition: &PipelineDefinition) -> Result<Verdict> {
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

    pub(super) fn apply_register(
        &mut self,
        definition: &PipelineDefinition,
    ) -> Result<RegisterOutcome> {
        let org = definition.organization.expect("checked");
        let (pipeline, created) = self.ensure_pipeline(definition.pipeline, org)?;
        let detail = EntityDetail {
            uuid: definition.pipeline.0,
            org_index: pipeline.org_index,
            name: definition.name.clone(),
            task_type: None,
            is_initial: false,
        };
        let before = match self.t.entities.get(pipeline.id.0)? {
            Some(bytes) => EntityDetail::decode(bytes.value())?.name,
            None => String::new(),
        };
        self.t
            .entities
            .insert(pipeline.id.0, detail.encode().as_slice())?;
        if before != detail.name {
            let uuid = definition.pipeline.0.as_bytes();
            let old_key = pipeline_name_key(pipeline.org_index, &before, uuid);
            self.t.pipeline_names.remove(old_key.as_slice())?;
            let new_key = pipeline_name_key(pipeline.org_index, &detail.name, uuid);
            self.t
                .pipeline_names
                .insert(new_key.as_slice(), pipeline.id.0)?;
        }
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
                    self.t
                        .entities
                        .insert(key.id.0, detail.encode().as_slice())?;
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

    /// The next REST id to hand out.
    pub(super) fn next_serial(&self) -> Result<u64> {
        match self.counters.next_serial {
            Some(next) => Ok(next),
            None => Ok(u64::from_le_bytes(
                self.counter(meta::NEXT_TASK_RUN_SERIAL, 1u64.to_le_bytes())?,
            )),
        }
    }

    fn allocate_serial(&mut self) -> Result<u64> {
        let next = self.next_serial()?;
        self.counters.next_serial = Some(next + 1);
        Ok(next)
    }

    /// Puts a pending task run (by its task-index key) in the executors' queue.
    pub(super) fn queue(
        &mut self,
        serial: u64,
        key: &[u8; INDEX_KEY_LEN],
        org: OrgId,
    ) -> Result<()> {
        let mut queued = [0u8; PENDING_LEN];
        queued[..key.len()].copy_from_slice(key);
        queued[key.len()..].copy_from_slice(org.as_bytes());
        self.t.pending.insert(serial, &queued)?;
        Ok(())
    }

    /// Creates one pending task run per initial task of the pipeline, in the new pipeline run
    /// `pipeline_run`, and queues them for executors.
    pub(super) fn start_pipeline_run(
        &mut self,
        pipeline: PipelineId,
        org: OrgId,
        pipeline_run: PipelineRunId,
        at: Timestamp,
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
        for entry in self.t.pipeline_tasks.range::<&[u8; 8]>(&low..=&high)? {
            let (task_key, _) = entry?;
            let task = EntityId(u32::from_be_bytes(
                task_key.value()[4..].try_into().expect("4 bytes"),
            ));
            let detail = match self.t.entities.get(task.0)? {
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
        let mut started = Vec::with_capacity(initial.len());
        for (task, detail) in initial {
            let serial = self.allocate_serial()?;
            let task_run = derived_task_run(pipeline_run, TaskId(detail.uuid));
            let task_type = detail.task_type.unwrap_or(TaskType::Query);
            let home = TaskRunHome::Unfinished {
                pipeline: key.id,
                executed_at: None,
                serial,
                created_at: at,
                updated_at: at,
                started_at: None,
                record: RunRecord {
                    task,
                    pipeline_run: RunRef::Uuid(pipeline_run),
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
            let period = self
                .find_task_run(key.org_index, &task_run)?
                .map(|(period, _)| period);
            let period = self.put_home(key.org_index, &task_run, period, home, None);
            let index_key = index_key(period, key.org_index, task_run.as_bytes());
            self.queue(serial, &index_key, org)?;
            started.push(PendingTaskRun {
                serial,
                task_run,
                pipeline_run,
                pipeline,
                task: TaskId(detail.uuid),
                task_type,
                organization: org,
                created_at: at,
            });
        }
        Ok(Ok(started))
    }
}

/// The task run of `task` in a pipeline run started by runledger: derived from both UUIDs, so
/// that starting a run decides nothing random inside the writer (the pipeline run's UUID comes
/// with the operation).
pub fn derived_task_run(pipeline_run: PipelineRunId, task: TaskId) -> TaskRunId {
    let digest = Sha256::new()
        .chain_update(b"runledger task run v1")
        .chain_update(pipeline_run.as_bytes())
        .chain_update(task.as_bytes())
        .finalize();
    let bytes: [u8; 16] = digest[..16].try_into().expect("16 of 32 bytes");
    TaskRunId(uuid::Builder::from_random_bytes(bytes).into_uuid())
}
