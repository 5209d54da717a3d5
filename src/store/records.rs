//! The byte encodings of the values stored in each table but the rollups (whose records are
//! [`super::rollup`]'s own). Hand-written and compact (varints for counts, ids and lengths)
//! because they are paid for once per stored run; every decoder checks bounds and reports a
//! corrupt record instead of panicking.

use uuid::Uuid;

use super::tables::{ENTITY_KEY_LEN, EntityId, LAST_RUN_LEN, OrgIndex, RunId};
use crate::error::Error;
use crate::model::{
    EntityKind, LastRun, OrgId, PipelineRunId, RunState, Tally, TaskError, TaskType,
};
use crate::time::Timestamp;

/// A value that failed to decode: the database was altered outside runledger or a bug wrote it.
pub fn corrupt(what: &str) -> Error {
    Error::Internal(format!("corrupt {what} record in the database"))
}

/// The facts about a pipeline or task that never change once it exists, needed on every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntityKey {
    pub id: EntityId,
    pub kind: EntityKind,
    pub org: OrgId,
    /// The organization's namespace in the tables keyed by its UUIDs.
    pub org_index: OrgIndex,
    /// The pipeline itself for a pipeline; the owning pipeline for a task.
    pub pipeline: EntityId,
}

impl EntityKey {
    pub fn encode(&self) -> [u8; ENTITY_KEY_LEN] {
        let mut out = [0u8; ENTITY_KEY_LEN];
        out[..4].copy_from_slice(&self.id.0.to_be_bytes());
        out[4] = match self.kind {
            EntityKind::Pipeline => 1,
            EntityKind::Task => 2,
        };
        out[5..21].copy_from_slice(self.org.as_bytes());
        out[21..25].copy_from_slice(&self.pipeline.0.to_be_bytes());
        out[25..].copy_from_slice(&self.org_index.0.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8; ENTITY_KEY_LEN]) -> Result<EntityKey, Error> {
        let kind = match bytes[4] {
            1 => EntityKind::Pipeline,
            2 => EntityKind::Task,
            _ => return Err(corrupt("entity key")),
        };
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4"));
        Ok(EntityKey {
            id: EntityId(u32_at(0)),
            kind,
            org: OrgId(Uuid::from_bytes(bytes[5..21].try_into().expect("16 bytes"))),
            pipeline: EntityId(u32_at(21)),
            org_index: OrgIndex(u32_at(25)),
        })
    }
}

/// The details of a pipeline or task that registration may change.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityDetail {
    pub uuid: Uuid,
    /// The namespace the UUID is in (never changes; kept here so an id leads back to its key).
    pub org_index: OrgIndex,
    pub name: String,
    /// Tasks only.
    pub task_type: Option<TaskType>,
    /// Tasks only: whether running the pipeline starts with this task.
    pub is_initial: bool,
}

impl EntityDetail {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.name.len());
        out.extend_from_slice(self.uuid.as_bytes());
        out.extend_from_slice(&self.org_index.0.to_be_bytes());
        out.push(self.task_type.map_or(0, TaskType::code));
        out.push(u8::from(self.is_initial));
        put_bytes(&mut out, self.name.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<EntityDetail, Error> {
        let bad = || corrupt("entity");
        let mut input = Input(bytes);
        let uuid = Uuid::from_bytes(input.array().ok_or_else(bad)?);
        let org_index = OrgIndex(u32::from_be_bytes(input.array().ok_or_else(bad)?));
        let task_type = match input.byte().ok_or_else(bad)? {
            0 => None,
            code => Some(TaskType::from_code(code).ok_or_else(bad)?),
        };
        let is_initial = input.byte().ok_or_else(bad)? != 0;
        let name = input.string().ok_or_else(bad)?;
        input.end().ok_or_else(bad)?;
        Ok(EntityDetail {
            uuid,
            org_index,
            name,
            task_type,
            is_initial,
        })
    }
}

/// Which pipeline run a task run is part of: by id once it is finished (and its pipeline run
/// has an aggregate), by UUID before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunRef {
    Id(RunId),
    Uuid(PipelineRunId),
}

/// A task run as stored: in `run_log` once finished, inside its [`TaskRunHome`] before.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub task: EntityId,
    pub pipeline_run: RunRef,
    pub task_type: TaskType,
    pub state: RunState,
    pub is_successful: bool,
    pub is_initial_task: bool,
    pub is_final_task: bool,
    pub duration_ms: u32,
    pub metric_value: Option<f64>,
    /// The sealed output envelope; empty for no output.
    pub output: Vec<u8>,
    pub errors: Vec<TaskError>,
}

const FLAG_SUCCESSFUL: u8 = 1;
const FLAG_INITIAL: u8 = 1 << 1;
const FLAG_FINAL: u8 = 1 << 2;
const FLAG_METRIC: u8 = 1 << 3;
const STATE_SHIFT: u8 = 4;
const STATE_MASK: u8 = 0b11 << STATE_SHIFT;
const FLAG_RUN_ID: u8 = 1 << 6;
const FLAG_DETAILS: u8 = 1 << 7;

/// What every reader of a run-log record needs, decoded without the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    pub task: EntityId,
    pub pipeline_run: RunRef,
    pub is_successful: bool,
    pub duration_ms: u32,
}

impl RunRecord {
    /// Task (varint), flags, pipeline run (varint id or UUID), task type, duration (varint),
    /// then, only when there are any, the metric, output and errors: a finished run without
    /// output is about 10 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.task.0));
        let state = match self.state {
            RunState::Pending => 0,
            RunState::Running => 1,
            RunState::Finished => 2,
        };
        let details =
            self.metric_value.is_some() || !self.output.is_empty() || !self.errors.is_empty();
        let flags = (u8::from(self.is_successful) * FLAG_SUCCESSFUL)
            | (u8::from(self.is_initial_task) * FLAG_INITIAL)
            | (u8::from(self.is_final_task) * FLAG_FINAL)
            | (u8::from(self.metric_value.is_some()) * FLAG_METRIC)
            | (state << STATE_SHIFT)
            | (u8::from(matches!(self.pipeline_run, RunRef::Id(_))) * FLAG_RUN_ID)
            | (u8::from(details) * FLAG_DETAILS);
        out.push(flags);
        match self.pipeline_run {
            RunRef::Id(id) => put_varint(out, id.0),
            RunRef::Uuid(uuid) => out.extend_from_slice(uuid.as_bytes()),
        }
        out.push(self.task_type.code());
        put_varint(out, u64::from(self.duration_ms));
        if details {
            if let Some(metric) = self.metric_value {
                out.extend_from_slice(&metric.to_le_bytes());
            }
            put_bytes(out, &self.output);
            put_varint(out, self.errors.len() as u64);
            for error in &self.errors {
                put_bytes(out, error.code.as_bytes());
                put_bytes(out, error.severity.as_bytes());
                put_bytes(out, error.message.as_bytes());
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.output.len());
        self.encode(&mut out);
        out
    }

    /// The task, pipeline run, outcome and duration of an encoded record, without the rest.
    pub fn decode_outcome(bytes: &[u8]) -> Result<RunOutcome, Error> {
        let mut input = Input(bytes);
        let head = decode_head(&mut input).ok_or_else(|| corrupt("task run"))?;
        Ok(RunOutcome {
            task: head.task,
            pipeline_run: head.pipeline_run,
            is_successful: head.flags & FLAG_SUCCESSFUL != 0,
            duration_ms: head.duration_ms,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<RunRecord, Error> {
        let mut input = Input(bytes);
        let record = RunRecord::decode_from(&mut input).ok_or_else(|| corrupt("task run"))?;
        if !input.0.is_empty() {
            return Err(corrupt("task run"));
        }
        Ok(record)
    }

    fn decode_from(input: &mut Input<'_>) -> Option<RunRecord> {
        let head = decode_head(input)?;
        let flags = head.flags;
        let state = match (flags & STATE_MASK) >> STATE_SHIFT {
            0 => RunState::Pending,
            1 => RunState::Running,
            2 => RunState::Finished,
            _ => return None,
        };
        let (mut metric_value, mut output, mut errors) = (None, Vec::new(), Vec::new());
        if flags & FLAG_DETAILS != 0 {
            if flags & FLAG_METRIC != 0 {
                metric_value = Some(f64::from_le_bytes(input.array()?));
            }
            output = input.bytes()?.to_vec();
            for _ in 0..input.varint()? {
                errors.push(TaskError {
                    code: input.string()?,
                    severity: input.string()?,
                    message: input.string()?,
                });
            }
        } else if flags & FLAG_METRIC != 0 {
            return None;
        }
        Some(RunRecord {
            task: head.task,
            pipeline_run: head.pipeline_run,
            task_type: head.task_type,
            state,
            is_successful: flags & FLAG_SUCCESSFUL != 0,
            is_initial_task: flags & FLAG_INITIAL != 0,
            is_final_task: flags & FLAG_FINAL != 0,
            duration_ms: head.duration_ms,
            metric_value,
            output,
            errors,
        })
    }
}

struct Head {
    task: EntityId,
    flags: u8,
    pipeline_run: RunRef,
    task_type: TaskType,
    duration_ms: u32,
}

fn decode_head(input: &mut Input<'_>) -> Option<Head> {
    let task = EntityId(u32::try_from(input.varint()?).ok()?);
    let flags = input.byte()?;
    let pipeline_run = if flags & FLAG_RUN_ID != 0 {
        RunRef::Id(RunId(input.varint()?))
    } else {
        RunRef::Uuid(PipelineRunId(Uuid::from_bytes(input.array()?)))
    };
    let task_type = TaskType::from_code(input.byte()?)?;
    let duration_ms = u32::try_from(input.varint()?).ok()?;
    Some(Head {
        task,
        flags,
        pipeline_run,
        task_type,
        duration_ms,
    })
}

/// Where a task run lives, in `task_index`: a finished run points at its `run_log` entry; an
/// unfinished one carries its record.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskRunHome {
    Finished {
        pipeline: EntityId,
        executed_at: Timestamp,
    },
    Unfinished {
        pipeline: EntityId,
        executed_at: Option<Timestamp>,
        /// The integer id shown by the REST API for runs it created; 0 otherwise.
        serial: u64,
        created_at: Timestamp,
        updated_at: Timestamp,
        /// When a running task run started (its first running report, or the start an
        /// OpenLineage START event gave); `None` unless it is running.
        started_at: Option<Timestamp>,
        record: RunRecord,
    },
}

impl TaskRunHome {
    /// The pipeline the task run is in.
    pub fn pipeline(&self) -> EntityId {
        match self {
            TaskRunHome::Finished { pipeline, .. } | TaskRunHome::Unfinished { pipeline, .. } => {
                *pipeline
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            TaskRunHome::Finished {
                pipeline,
                executed_at,
            } => {
                let mut out = Vec::with_capacity(14);
                out.push(0);
                put_varint(&mut out, u64::from(pipeline.0));
                out.extend_from_slice(&executed_at.micros().to_be_bytes());
                out
            }
            TaskRunHome::Unfinished {
                pipeline,
                executed_at,
                serial,
                created_at,
                updated_at,
                started_at,
                record,
            } => {
                let mut out = Vec::with_capacity(72 + record.output.len());
                // Tag 2 is tag 1 with a start instant after `updated_at`.
                out.push(if started_at.is_some() { 2 } else { 1 });
                put_varint(&mut out, u64::from(pipeline.0));
                out.extend_from_slice(
                    &executed_at
                        .map_or(i64::MIN, Timestamp::micros)
                        .to_be_bytes(),
                );
                put_varint(&mut out, *serial);
                out.extend_from_slice(&created_at.micros().to_be_bytes());
                out.extend_from_slice(&updated_at.micros().to_be_bytes());
                if let Some(started_at) = started_at {
                    out.extend_from_slice(&started_at.micros().to_be_bytes());
                }
                record.encode(&mut out);
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<TaskRunHome, Error> {
        Self::decode_from(&mut Input(bytes)).ok_or_else(|| corrupt("task-run home"))
    }

    fn decode_from(input: &mut Input<'_>) -> Option<TaskRunHome> {
        let tag = input.byte()?;
        let pipeline = EntityId(u32::try_from(input.varint()?).ok()?);
        let executed_at = i64::from_be_bytes(input.array()?);
        match tag {
            0 => {
                input.end()?;
                Some(TaskRunHome::Finished {
                    pipeline,
                    executed_at: Timestamp::from_micros(executed_at)?,
                })
            }
            1 | 2 => {
                let executed_at = match executed_at {
                    i64::MIN => None,
                    micros => Some(Timestamp::from_micros(micros)?),
                };
                let serial = input.varint()?;
                let created_at = Timestamp::from_micros(i64::from_be_bytes(input.array()?))?;
                let updated_at = Timestamp::from_micros(i64::from_be_bytes(input.array()?))?;
                let started_at = match tag {
                    2 => Some(Timestamp::from_micros(i64::from_be_bytes(input.array()?))?),
                    _ => None,
                };
                let record = RunRecord::decode_from(input)?;
                input.end()?;
                Some(TaskRunHome::Unfinished {
                    pipeline,
                    executed_at,
                    serial,
                    created_at,
                    updated_at,
                    started_at,
                    record,
                })
            }
            _ => None,
        }
    }
}

/// Task-run instants a pipeline run's aggregate keeps itself; past this many they move to the
/// `run_members` index.
pub const INLINE_MEMBERS: usize = 8;

/// A pipeline run as the stats see it, maintained as its finished task runs come and go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipelineRunAgg {
    pub uuid: PipelineRunId,
    pub pipeline: EntityId,
    /// Finished task runs.
    pub finished: u32,
    /// Finished task runs that failed.
    pub failed: u32,
    /// The sum of their durations.
    pub duration_ms: u64,
    /// The latest executed_at among them: the pipeline run's executed_at.
    pub latest_micros: i64,
    /// Their executed_at, while there are at most [`INLINE_MEMBERS`]; `None` once they live
    /// in `run_members` (a pipeline run that large). Either way, when the latest task run is
    /// replaced the next latest is found without scanning.
    pub members: Option<InlineMembers>,
}

/// Up to [`INLINE_MEMBERS`] instants, sorted, unused slots zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InlineMembers {
    len: u8,
    micros: [i64; INLINE_MEMBERS],
}

impl InlineMembers {
    pub fn as_slice(&self) -> &[i64] {
        &self.micros[..usize::from(self.len)]
    }

    /// Adds an instant; `false` (and nothing changed) when full.
    pub fn insert(&mut self, micros: i64) -> bool {
        let len = usize::from(self.len);
        if len == INLINE_MEMBERS {
            return false;
        }
        let at = self.as_slice().partition_point(|m| *m <= micros);
        self.micros.copy_within(at..len, at + 1);
        self.micros[at] = micros;
        self.len += 1;
        true
    }

    /// Removes one occurrence of an instant; `false` when there is none.
    pub fn remove(&mut self, micros: i64) -> bool {
        let len = usize::from(self.len);
        let Some(at) = self.as_slice().iter().position(|m| *m == micros) else {
            return false;
        };
        self.micros.copy_within(at + 1..len, at);
        self.micros[len - 1] = 0;
        self.len -= 1;
        true
    }

    pub fn latest(&self) -> Option<i64> {
        self.as_slice().last().copied()
    }
}

/// The marker of an aggregate whose members live in `run_members`.
const INDEXED: u8 = u8::MAX;

impl PipelineRunAgg {
    /// What this pipeline run contributes to its pipeline's stats.
    pub fn tally(&self) -> Tally {
        Tally::of_run(self.failed == 0, self.duration_ms)
    }

    /// The UUID, varints, the latest executed_at, then the members as varint distances back from
    /// the latest (which is the last member, so it is not repeated): about 36 bytes for a
    /// pipeline run of a few task runs.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        out.extend_from_slice(self.uuid.as_bytes());
        put_varint(&mut out, u64::from(self.pipeline.0));
        put_varint(&mut out, u64::from(self.finished));
        put_varint(&mut out, u64::from(self.failed));
        put_varint(&mut out, self.duration_ms);
        out.extend_from_slice(&self.latest_micros.to_be_bytes());
        match &self.members {
            Some(members) => {
                let members = members.as_slice();
                out.push(members.len() as u8);
                for micros in &members[..members.len().saturating_sub(1)] {
                    put_varint(&mut out, self.latest_micros.wrapping_sub(*micros) as u64);
                }
            }
            None => out.push(INDEXED),
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<PipelineRunAgg, Error> {
        let bad = || corrupt("pipeline run");
        let mut input = Input(bytes);
        let uuid = PipelineRunId(Uuid::from_bytes(input.array().ok_or_else(bad)?));
        let small = |input: &mut Input<'_>| -> Option<u32> { u32::try_from(input.varint()?).ok() };
        let pipeline = EntityId(small(&mut input).ok_or_else(bad)?);
        let finished = small(&mut input).ok_or_else(bad)?;
        let failed = small(&mut input).ok_or_else(bad)?;
        let duration_ms = input.varint().ok_or_else(bad)?;
        let latest_micros = i64::from_be_bytes(input.array().ok_or_else(bad)?);
        let members = match input.byte().ok_or_else(bad)? {
            INDEXED => None,
            0 => Some(InlineMembers::default()),
            len if usize::from(len) <= INLINE_MEMBERS => {
                let mut members = InlineMembers::default();
                for _ in 1..len {
                    let back = input.varint().ok_or_else(bad)?;
                    members.insert(latest_micros.wrapping_sub(back as i64));
                }
                members.insert(latest_micros);
                Some(members)
            }
            _ => return Err(bad()),
        };
        input.end().ok_or_else(bad)?;
        Ok(PipelineRunAgg {
            uuid,
            pipeline,
            finished,
            failed,
            duration_ms,
            latest_micros,
            members,
        })
    }
}

/// The latest finished run of an entity, with the UUID that breaks ties between runs executed in
/// the same microsecond (the larger UUID counts as later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastRunRecord {
    pub executed_at: Timestamp,
    pub run: Uuid,
    pub is_successful: bool,
    pub duration_ms: u64,
}

impl LastRunRecord {
    /// The order in which runs are "later": executed_at, then UUID.
    pub fn order_key(&self) -> (Timestamp, Uuid) {
        (self.executed_at, self.run)
    }

    pub fn last_run(&self) -> LastRun {
        LastRun {
            executed_at: self.executed_at,
            is_successful: self.is_successful,
            duration_ms: self.duration_ms,
        }
    }

    pub fn encode(&self) -> [u8; LAST_RUN_LEN] {
        let mut out = [0u8; LAST_RUN_LEN];
        out[..8].copy_from_slice(&self.executed_at.micros().to_be_bytes());
        out[8..24].copy_from_slice(self.run.as_bytes());
        out[24] = u8::from(self.is_successful);
        out[25..].copy_from_slice(&self.duration_ms.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8; LAST_RUN_LEN]) -> Result<LastRunRecord, Error> {
        let micros = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        Ok(LastRunRecord {
            executed_at: Timestamp::from_micros(micros).ok_or_else(|| corrupt("last run"))?,
            run: Uuid::from_bytes(bytes[8..24].try_into().expect("16 bytes")),
            is_successful: bytes[24] != 0,
            duration_ms: u64::from_be_bytes(bytes[25..].try_into().expect("8 bytes")),
        })
    }
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A bounds-checked reader over an encoded value (also of older formats' values, for upgrade).
pub(super) struct Input<'a>(pub(super) &'a [u8]);

impl<'a> Input<'a> {
    pub(super) fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    /// A LEB128 varint of at most 64 bits: a tenth byte may hold only the top bit, anything
    /// more is corruption (not silently dropped bits).
    pub(super) fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            if shift == 63 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    pub(super) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }

    pub(super) fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    /// `Some` when everything was read.
    pub(super) fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(
        pipeline_run: RunRef,
        output: Vec<u8>,
        metric_value: Option<f64>,
        errors: Vec<TaskError>,
    ) -> RunRecord {
        RunRecord {
            task: EntityId(9),
            pipeline_run,
            task_type: TaskType::ForEach,
            state: RunState::Running,
            is_successful: true,
            is_initial_task: false,
            is_final_task: true,
            duration_ms: u32::MAX,
            metric_value,
            output,
            errors,
        }
    }

    #[test]
    fn records_round_trip() {
        let errors = vec![TaskError {
            code: "E42".into(),
            severity: "error".into(),
            message: "división by zero".into(),
        }];
        let by_uuid = RunRef::Uuid(PipelineRunId(Uuid::from_u128(77)));
        let run = record(by_uuid, vec![1, 2, 3], Some(-0.5), errors);
        assert_eq!(RunRecord::decode(&run.to_bytes()).unwrap(), run);
        let plain = record(RunRef::Id(RunId(300)), Vec::new(), None, Vec::new());
        assert!(plain.to_bytes().len() <= 12, "{}", plain.to_bytes().len());
        assert_eq!(RunRecord::decode(&plain.to_bytes()).unwrap(), plain);
        assert_eq!(
            RunRecord::decode_outcome(&plain.to_bytes()).unwrap(),
            RunOutcome {
                task: EntityId(9),
                pipeline_run: RunRef::Id(RunId(300)),
                is_successful: true,
                duration_ms: u32::MAX
            }
        );
        let home = TaskRunHome::Unfinished {
            pipeline: EntityId(3),
            executed_at: None,
            serial: 300,
            created_at: Timestamp::from_micros(5).unwrap(),
            updated_at: Timestamp::from_micros(6).unwrap(),
            started_at: None,
            record: run,
        };
        assert_eq!(TaskRunHome::decode(&home.encode()).unwrap(), home);
        let TaskRunHome::Unfinished { record, .. } = home.clone() else {
            unreachable!()
        };
        let running = TaskRunHome::Unfinished {
            pipeline: EntityId(3),
            executed_at: None,
            serial: 300,
            created_at: Timestamp::from_micros(5).unwrap(),
            updated_at: Timestamp::from_micros(6).unwrap(),
            started_at: Timestamp::from_micros(-7),
            record,
        };
        assert_eq!(TaskRunHome::decode(&running.encode()).unwrap(), running);
        assert_eq!(
            home.encode().len() + 8,
            running.encode().len(),
            "a start costs its 8 bytes, and only when there is one"
        );
        let finished = TaskRunHome::Finished {
            pipeline: EntityId(300),
            executed_at: Timestamp::from_micros(-1).unwrap(),
        };
        assert_eq!(TaskRunHome::decode(&finished.encode()).unwrap(), finished);
        let mut members = InlineMembers::default();
        for micros in [7, -5, 7, i64::MIN] {
            assert!(members.insert(micros));
        }
        assert_eq!(members.as_slice(), [i64::MIN, -5, 7, 7]);
        let mut agg = PipelineRunAgg {
            uuid: PipelineRunId(Uuid::from_u128(5)),
            pipeline: EntityId(1),
            finished: 4,
            failed: 1,
            duration_ms: 1 << 40,
            latest_micros: 7,
            members: Some(members),
        };
        assert_eq!(PipelineRunAgg::decode(&agg.encode()).unwrap(), agg);
        assert!(members.remove(7) && !members.remove(8));
        assert_eq!(
            (members.as_slice(), members.latest()),
            (&[i64::MIN, -5, 7][..], Some(7))
        );
        while members.insert(1) {}
        assert_eq!(members.as_slice().len(), INLINE_MEMBERS);
        agg.members = None;
        assert_eq!(PipelineRunAgg::decode(&agg.encode()).unwrap(), agg);
        assert!(PipelineRunAgg::decode(&agg.encode()[..20]).is_err());
    }

    #[test]
    fn truncated_or_padded_records_are_corrupt_not_panics() {
        let by_uuid = RunRef::Uuid(PipelineRunId(Uuid::nil()));
        let bytes = record(by_uuid, vec![9; 40], Some(1.0), vec![TaskError::default()]).to_bytes();
        for len in 0..bytes.len() {
            assert!(RunRecord::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(RunRecord::decode(&padded).is_err());
        // A tenth varint byte may carry only the 64th bit.
        let mut max = Vec::new();
        put_varint(&mut max, u64::MAX);
        assert_eq!(max.len(), 10);
        assert_eq!(Input(&max).varint(), Some(u64::MAX));
        let mut overflowing = max.clone();
        overflowing[9] = 0x02;
        assert_eq!(Input(&overflowing).varint(), None);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes: Vec<u8>) {
            let _ = PipelineRunAgg::decode(&bytes);
            let _ = RunRecord::decode(&bytes);
            let _ = RunRecord::decode_outcome(&bytes);
            let _ = TaskRunHome::decode(&bytes);
            let _ = EntityDetail::decode(&bytes);
        }
    }
}
