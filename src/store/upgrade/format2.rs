//! Reading a format-2 database (runledger up to the first release): its table definitions and
//! the decoders of the records `runledger upgrade` carries over. Derived tables (rollups, last
//! runs, pipeline-run aggregates) are not read; they are rebuilt from the runs.

use redb::{ReadTransaction, ReadableTable, TableDefinition};
use rustc_hash::FxHashMap as HashMap;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    OrgId, PipelineDefinition, PipelineId, PipelineRunId, RunState, TaskDefinition, TaskError,
    TaskId, TaskRun, TaskRunId, TaskType,
};
use crate::store::UnfinishedRun;
use crate::store::credentials::{ClientRecord, OrgRecord, TokenKind, TokenRecord};
use crate::store::records::Input;
use crate::time::Timestamp;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const ENTITY_KEYS: TableDefinition<&[u8; 16], &[u8; 25]> = TableDefinition::new("entity_keys");
const ENTITIES: TableDefinition<u32, &[u8]> = TableDefinition::new("entities");
const PIPELINE_TASKS: TableDefinition<&[u8; 8], ()> = TableDefinition::new("pipeline_tasks");
const TASK_RUNS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("task_runs");
const RUN_LOG: TableDefinition<&[u8; 28], &[u8]> = TableDefinition::new("run_log");
const ORGANIZATIONS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("organizations");
const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients");
const TOKENS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("tokens");
const PENDING: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("pending");

/// A pipeline or task of the old file, by its old interned id.
#[derive(Clone)]
struct Entity {
    uuid: Uuid,
    org: OrgId,
    /// The old id of its pipeline (itself for a pipeline).
    pipeline: u32,
    is_pipeline: bool,
    name: String,
    task_type: Option<TaskType>,
    is_initial: bool,
}

/// An open format-2 file.
pub struct Format2 {
    txn: ReadTransaction,
    entities: HashMap<u32, Entity>,
}

impl Format2 {
    pub fn open(txn: ReadTransaction) -> Result<Format2> {
        let mut entities = HashMap::default();
        {
            let keys = txn.open_table(ENTITY_KEYS)?;
            let details = txn.open_table(ENTITIES)?;
            for entry in keys.iter()? {
                let (uuid, key) = entry?;
                let key = key.value();
                let id = u32::from_be_bytes(key[..4].try_into().expect("4 bytes"));
                let is_pipeline = match key[4] {
                    1 => true,
                    2 => false,
                    _ => return Err(corrupt("entity key")),
                };
                let org = OrgId(Uuid::from_bytes(key[5..21].try_into().expect("16 bytes")));
                let pipeline = u32::from_be_bytes(key[21..].try_into().expect("4 bytes"));
                let detail = details.get(id)?.ok_or_else(|| corrupt("entity"))?;
                let mut input = Input(detail.value());
                let bad = || corrupt("entity");
                if input.array::<16>().ok_or_else(bad)? != *uuid.value() {
                    return Err(bad());
                }
                let task_type = match input.byte().ok_or_else(bad)? {
                    0 => None,
                    code => Some(TaskType::from_code(code).ok_or_else(bad)?),
                };
                let is_initial = input.byte().ok_or_else(bad)? != 0;
                let name = input.string().ok_or_else(bad)?;
                entities.insert(
                    id,
                    Entity {
                        uuid: Uuid::from_bytes(*uuid.value()),
                        org,
                        pipeline,
                        is_pipeline,
                        name,
                        task_type,
                        is_initial,
                    },
                );
            }
        }
        Ok(Format2 { txn, entities })
    }

    /// The next task-run serial the old file would have handed out.
    pub fn next_serial(&self) -> Result<u64> {
        let meta = self.txn.open_table(META)?;
        Ok(match meta.get("next_task_run_serial")? {
            Some(bytes) => u64::from_le_bytes(
                bytes
                    .value()
                    .try_into()
                    .map_err(|_| corrupt("task-run serial counter"))?,
            ),
            None => 1,
        })
    }

    pub fn organizations(&self) -> Result<Vec<(OrgId, OrgRecord)>> {
        let mut out = Vec::new();
        for entry in self.txn.open_table(ORGANIZATIONS)?.iter()? {
            let (org, record) = entry?;
            out.push((
                OrgId(Uuid::from_bytes(*org.value())),
                OrgRecord::decode(record.value())?,
            ));
        }
        Ok(out)
    }

    pub fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        let mut out = Vec::new();
        for entry in self.txn.open_table(CLIENTS)?.iter()? {
            let (id, record) = entry?;
            out.push((
                id.value().to_string(),
                ClientRecord::decode(record.value())?,
            ));
        }
        Ok(out)
    }

    /// Every stored token with its hash. Format 2 had no grant families: each token becomes a
    /// family of its own, named by its hash.
    pub fn tokens(&self) -> Result<Vec<([u8; 32], TokenRecord)>> {
        let mut out = Vec::new();
        for entry in self.txn.open_table(TOKENS)?.iter()? {
            let (hash, bytes) = entry?;
            let hash = *hash.value();
            out.push((hash, decode_token(&hash, bytes.value())?));
        }
        Ok(out)
    }

    /// Every pipeline with its tasks, in the order they were created.
    pub fn pipelines(&self) -> Result<Vec<PipelineDefinition>> {
        let mut ids: Vec<u32> = self.entities.keys().copied().collect();
        ids.sort_unstable();
        let links = self.txn.open_table(PIPELINE_TASKS)?;
        let mut out = Vec::new();
        for id in ids {
            let pipeline = &self.entities[&id];
            if !pipeline.is_pipeline {
                continue;
            }
            let low = link_key(id, 0);
            let high = link_key(id, u32::MAX);
            let mut tasks = Vec::new();
            for entry in links.range::<&[u8; 8]>(&low..=&high)? {
                let (key, _) = entry?;
                let task_id = u32::from_be_bytes(key.value()[4..].try_into().expect("4 bytes"));
                let task = self.entity(task_id)?;
                tasks.push(TaskDefinition {
                    task: TaskId(task.uuid),
                    task_type: task.task_type.unwrap_or(TaskType::Query),
                    name: task.name.clone(),
                    is_initial: task.is_initial,
                });
            }
            out.push(PipelineDefinition {
                pipeline: PipelineId(pipeline.uuid),
                organization: Some(pipeline.org),
                name: pipeline.name.clone(),
                tasks,
            });
        }
        Ok(out)
    }

    /// Every finished task run, by pipeline then time, handed to `sink` in chunks of `chunk`.
    pub fn finished_runs(
        &self,
        chunk: usize,
        mut sink: impl FnMut(Vec<TaskRun>) -> Result<()>,
    ) -> Result<()> {
        let mut runs = Vec::with_capacity(chunk);
        for entry in self.txn.open_table(RUN_LOG)?.iter()? {
            let (key, value) = entry?;
            let key = key.value();
            let pipeline = u32::from_be_bytes(key[..4].try_into().expect("4 bytes"));
            let micros =
                (u64::from_be_bytes(key[4..12].try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
            let task_run = TaskRunId(Uuid::from_bytes(key[12..].try_into().expect("16 bytes")));
            let executed_at = Timestamp::from_micros(micros).ok_or_else(|| corrupt("task run"))?;
            let run = decode_run(&mut Input(value.value())).ok_or_else(|| corrupt("task run"))?;
            runs.push(self.task_run(task_run, pipeline, Some(executed_at), run)?);
            if runs.len() == chunk {
                sink(std::mem::replace(&mut runs, Vec::with_capacity(chunk)))?;
            }
        }
        if !runs.is_empty() {
            sink(runs)?;
        }
        Ok(())
    }

    /// Every task run that has not finished, with its REST id and whether it waits in the
    /// executors' queue.
    pub fn unfinished_runs(&self) -> Result<Vec<UnfinishedRun>> {
        let queued: std::collections::HashSet<u64> = self
            .txn
            .open_table(PENDING)?
            .iter()?
            .map(|entry| entry.map(|(serial, _)| serial.value()))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for entry in self.txn.open_table(TASK_RUNS)?.iter()? {
            let (uuid, home) = entry?;
            let bytes = home.value();
            if bytes.first() != Some(&1) {
                continue; // a finished run: it is in the run log
            }
            let bad = || corrupt("task-run home");
            let mut input = Input(&bytes[1..]);
            let pipeline = u32::from_be_bytes(input.array().ok_or_else(bad)?);
            let executed_at = match i64::from_be_bytes(input.array().ok_or_else(bad)?) {
                i64::MIN => None,
                micros => Some(Timestamp::from_micros(micros).ok_or_else(bad)?),
            };
            let serial = input.varint().ok_or_else(bad)?;
            let mut time = || {
                Timestamp::from_micros(i64::from_be_bytes(input.array().ok_or_else(bad)?))
                    .ok_or_else(bad)
            };
            let created_at = time()?;
            let updated_at = time()?;
            let run = decode_run(&mut input).ok_or_else(bad)?;
            if !input.0.is_empty() {
                return Err(bad());
            }
            let task_run = TaskRunId(Uuid::from_bytes(*uuid.value()));
            out.push(UnfinishedRun {
                run: self.task_run(task_run, pipeline, executed_at, run)?,
                serial,
                queued: serial != 0 && queued.contains(&serial),
                created_at,
                updated_at,
            });
        }
        Ok(out)
    }

    fn entity(&self, id: u32) -> Result<&Entity> {
        self.entities
            .get(&id)
            .ok_or_else(|| corrupt("entity reference"))
    }

    fn task_run(
        &self,
        task_run: TaskRunId,
        pipeline: u32,
        executed_at: Option<Timestamp>,
        run: OldRun,
    ) -> Result<TaskRun> {
        let task = self.entity(run.task)?;
        let owner = self.entity(pipeline)?;
        if task.is_pipeline || task.pipeline != pipeline || !owner.is_pipeline {
            return Err(corrupt("task run"));
        }
        Ok(TaskRun {
            task_run,
            pipeline_run: run.pipeline_run,
            pipeline: PipelineId(owner.uuid),
            task: TaskId(task.uuid),
            organization: Some(owner.org),
            task_type: run.task_type,
            state: run.state,
            is_successful: run.is_successful,
            duration_ms: run.duration_ms,
            executed_at,
            output: run.output,
            errors: run.errors,
            metric_value: run.metric_value,
            is_initial_task: run.is_initial_task,
            is_final_task: run.is_final_task,
        })
    }
}

fn corrupt(what: &str) -> Error {
    Error::Internal(format!("corrupt {what} record in the format-2 database"))
}

fn link_key(pipeline: u32, task: u32) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[..4].copy_from_slice(&pipeline.to_be_bytes());
    key[4..].copy_from_slice(&task.to_be_bytes());
    key
}

fn decode_token(hash: &[u8; 32], bytes: &[u8]) -> Result<TokenRecord> {
    let bad = || corrupt("token");
    let mut input = Input(bytes);
    let kind = match input.byte().ok_or_else(bad)? {
        1 => TokenKind::Access,
        2 => TokenKind::Refresh,
        _ => return Err(bad()),
    };
    let org = OrgId(Uuid::from_bytes(input.array().ok_or_else(bad)?));
    let scopes = input.byte().ok_or_else(bad)?;
    let expires_at = Timestamp::from_micros(i64::from_be_bytes(input.array().ok_or_else(bad)?))
        .ok_or_else(bad)?;
    let id_len = usize::from(input.byte().ok_or_else(bad)?);
    if input.0.len() < id_len {
        return Err(bad());
    }
    let (client_id, scope_text) = input.0.split_at(id_len);
    Ok(TokenRecord {
        kind,
        redeemed: false,
        family: hash[..16].try_into().expect("16 of 32 bytes"),
        client_id: String::from_utf8(client_id.to_vec()).map_err(|_| bad())?,
        org,
        scopes,
        scope_text: String::from_utf8(scope_text.to_vec()).map_err(|_| bad())?,
        expires_at,
    })
}

/// A format-2 run record.
struct OldRun {
    task: u32,
    pipeline_run: PipelineRunId,
    task_type: TaskType,
    state: RunState,
    is_successful: bool,
    is_initial_task: bool,
    is_final_task: bool,
    duration_ms: u32,
    metric_value: Option<f64>,
    output: Vec<u8>,
    errors: Vec<TaskError>,
}

fn decode_run(input: &mut Input<'_>) -> Option<OldRun> {
    let task = u32::from_be_bytes(input.array()?);
    let pipeline_run = PipelineRunId(Uuid::from_bytes(input.array()?));
    let task_type = TaskType::from_code(input.byte()?)?;
    let flags = input.byte()?;
    let state = match flags >> 4 {
        0 => RunState::Pending,
        1 => RunState::Running,
        2 => RunState::Finished,
        _ => return None,
    };
    let duration_ms = u32::try_from(input.varint()?).ok()?;
    let metric_value = (flags & 8 != 0)
        .then(|| input.array().map(f64::from_le_bytes))
        .flatten();
    if flags & 8 != 0 && metric_value.is_none() {
        return None;
    }
    let output = input.bytes()?.to_vec();
    let count = input.varint()?;
    let mut errors = Vec::new();
    for _ in 0..count {
        errors.push(TaskError {
            code: input.string()?,
            severity: input.string()?,
            message: input.string()?,
        });
    }
    Some(OldRun {
        task,
        pipeline_run,
        task_type,
        state,
        is_successful: flags & 1 != 0,
        is_initial_task: flags & 2 != 0,
        is_final_task: flags & 4 != 0,
        duration_ms,
        metric_value,
        output,
        errors,
    })
}
