//! The stream's message bodies: one or more [`WriteOp`]s (each its own atomic unit, as in one
//! group commit) in a compact, versioned binary form. Every node decodes the same bytes into
//! the same operations, so applying the stream in order gives every node the same tables.
//! Outputs travel sealed (the stream holds no plaintext).

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::lineage::{EventType, Observed};
use crate::model::{
    OrgId, PipelineDefinition, PipelineId, PipelineRunId, RunState, TaskDefinition, TaskError,
    TaskId, TaskRun, TaskRunId, TaskType,
};
use crate::store::credentials::{ClientRecord, OrgRecord, TokenRecord};
use crate::store::{IssueRequest, WriteOp};
use crate::time::Timestamp;

/// The first byte of every message: the encoding's version.
const VERSION: u8 = 1;

const REPORT: u8 = 1;
const REGISTER: u8 = 2;
const START: u8 = 3;
const ORGANIZATION: u8 = 4;
const CLIENT: u8 = 5;
const REVOKE: u8 = 6;
const TOKENS: u8 = 7;
const PURGE: u8 = 8;
const PRUNE: u8 = 9;
const LINEAGE: u8 = 10;
const CREATE_RULE: u8 = 11;
const DELETE_RULE: u8 = 12;
const ALERT_TICK: u8 = 13;
const FINISH_DELIVERY: u8 = 14;
const RETRY_DELIVERY: u8 = 15;
const DELIVERIES: u8 = 16;

/// Whether an operation is about credentials (organizations, clients, tokens): these go to the
/// credentials subject, which gateways apply too.
pub fn is_credential(op: &WriteOp) -> bool {
    matches!(
        op,
        WriteOp::CreateOrganization { .. }
            | WriteOp::CreateClient { .. }
            | WriteOp::RevokeClient { .. }
            | WriteOp::IssueTokens(_)
            | WriteOp::PurgeTokens { .. }
    )
}

/// The message body of `ops`.
pub fn encode(ops: &[WriteOp]) -> Result<Vec<u8>> {
    let mut out = Out(Vec::with_capacity(
        64 + ops.iter().map(WriteOp::bytes).sum::<usize>(),
    ));
    out.u8(VERSION);
    out.u32(ops.len() as u32);
    for op in ops {
        encode_op(op, &mut out)?;
    }
    Ok(out.0)
}

fn encode_op(op: &WriteOp, out: &mut Out) -> Result<()> {
    match op {
        WriteOp::Report { runs, at } => {
            out.u8(REPORT);
            out.time(*at);
            out.u32(runs.len() as u32);
            for run in runs {
                out.task_run(run);
            }
        }
        WriteOp::Register(definition) => {
            out.u8(REGISTER);
            out.uuid(definition.pipeline.0);
            out.opt_uuid(definition.organization.map(|o| o.0));
            out.str(&definition.name);
            out.u32(definition.tasks.len() as u32);
            for task in &definition.tasks {
                out.uuid(task.task.0);
                out.u8(task.task_type.code());
                out.str(&task.name);
                out.u8(u8::from(task.is_initial));
            }
        }
        WriteOp::StartPipelineRun {
            pipeline,
            org,
            pipeline_run,
            at,
        } => {
            out.u8(START);
            out.uuid(pipeline.0);
            out.uuid(org.0);
            out.uuid(pipeline_run.0);
            out.time(*at);
        }
        WriteOp::CreateOrganization { org, record } => {
            out.u8(ORGANIZATION);
            out.uuid(org.0);
            out.bytes(&record.encode());
        }
        WriteOp::CreateClient { client_id, record } => {
            out.u8(CLIENT);
            out.str(client_id);
            out.bytes(&record.encode());
        }
        WriteOp::RevokeClient { client_id, at } => {
            out.u8(REVOKE);
            out.str(client_id);
            out.time(*at);
        }
        WriteOp::IssueTokens(request) => {
            out.u8(TOKENS);
            out.str(&request.client_id);
            out.time(request.at);
            match &request.redeem {
                Some(hash) => {
                    out.u8(1);
                    out.0.extend_from_slice(hash);
                }
                None => out.u8(0),
            }
            out.u32(request.tokens.len() as u32);
            for (hash, record) in &request.tokens {
                out.0.extend_from_slice(hash);
                out.bytes(&record.encode());
            }
        }
        WriteOp::PurgeTokens { before } => {
            out.u8(PURGE);
            out.time(*before);
        }
        WriteOp::Prune { before, limit } => {
            out.u8(PRUNE);
            out.i64(*before);
            out.u32(u32::try_from(*limit).unwrap_or(u32::MAX));
        }
        WriteOp::Lineage { org, event, at } => {
            out.u8(LINEAGE);
            out.uuid(org.0);
            out.time(*at);
            out.uuid(event.run);
            out.u8(event_type_code(event.event_type));
            out.time(event.event_time);
            out.uuid(event.pipeline.0);
            out.str(&event.pipeline_name);
            out.uuid(event.task.0);
            out.str(&event.task_name);
            out.u8(event.task_type.code());
            out.uuid(event.pipeline_run.0);
            out.u8(u8::from(event.has_parent));
            out.u32(event.parents.len() as u32);
            for parent in &event.parents {
                out.uuid(*parent);
            }
            match &event.error {
                Some(error) => {
                    out.u8(1);
                    out.str(error);
                }
                None => out.u8(0),
            }
            out.bytes(&event.output);
        }
        WriteOp::CreateRule { org, rule, stored } => {
            out.u8(CREATE_RULE);
            out.uuid(org.0);
            out.uuid(*rule);
            out.bytes(&stored.encode());
        }
        WriteOp::DeleteRule { org, rule, at } => {
            out.u8(DELETE_RULE);
            out.uuid(org.0);
            out.uuid(*rule);
            out.time(*at);
        }
        WriteOp::AlertTick { at } => {
            out.u8(ALERT_TICK);
            out.time(*at);
        }
        WriteOp::FinishDelivery { serial, end, at } => {
            out.u8(FINISH_DELIVERY);
            out.i64(*serial as i64);
            out.u8(end.tag());
            out.time(*at);
        }
        WriteOp::RetryDelivery {
            serial,
            attempts,
            next_at,
            error,
        } => {
            out.u8(RETRY_DELIVERY);
            out.i64(*serial as i64);
            out.u32(*attempts);
            out.i64(*next_at);
            out.str(error);
        }
        WriteOp::Deliveries(ends) => {
            out.u8(DELIVERIES);
            out.u32(ends.len() as u32);
            for end in ends {
                match end {
                    WriteOp::FinishDelivery { .. } | WriteOp::RetryDelivery { .. } => {
                        encode_op(end, out)?
                    }
                    other => {
                        return Err(Error::Internal(format!(
                            "{} among the ends of deliveries",
                            other.name()
                        )));
                    }
                }
            }
        }
        WriteOp::Restore { .. } => {
            return Err(Error::InvalidArgument(
                "carrying unfinished runs over from an older database is not done through the cluster's stream; upgrade a node's data dir offline".into(),
            ));
        }
    }
    Ok(())
}

/// A task run in the stream's form, appended to `out` (an import's sorted runs use it too).
pub fn encode_task_run(run: &TaskRun, out: &mut Vec<u8>) {
    let mut writer = Out(std::mem::take(out));
    writer.task_run(run);
    *out = writer.0;
}

/// The task run [`encode_task_run`] wrote at the start of `bytes`, and the bytes after it.
pub fn decode_task_run(bytes: &[u8]) -> Result<(TaskRun, &[u8])> {
    let mut input = In(bytes);
    let run = input.task_run()?;
    Ok((run, input.0))
}

/// The operations in a message body read from `subject`, checked as a writer would have
/// checked them before publishing; the error says why the message cannot be applied (every
/// node decides alike, so every node skips it alike).
pub fn decode_from(subject: &str, bytes: &[u8]) -> std::result::Result<Vec<WriteOp>, String> {
    let ops = decode(bytes).map_err(|e| e.to_string())?;
    for (index, op) in ops.iter().enumerate() {
        // An organization may come ahead of its runs (`import --nats`) or of its clients.
        let expected = match op {
            WriteOp::CreateOrganization { .. } => subject,
            op if is_credential(op) => super::log::CREDENTIALS_SUBJECT,
            _ => super::log::DATA_SUBJECT,
        };
        if subject != expected {
            return Err(format!(
                "operation {index} ({}) belongs on {expected}, not {subject}",
                op.name()
            ));
        }
        if let WriteOp::Report { runs, .. } = op
            && let Some(run) = runs.iter().position(|run| run.organization.is_none())
        {
            return Err(format!(
                "operation {index}: results[{run}].organization_uuid is missing"
            ));
        }
    }
    Ok(ops)
}

/// The operations in a message body; an error names what is malformed.
pub fn decode(bytes: &[u8]) -> Result<Vec<WriteOp>> {
    let mut input = In(bytes);
    let version = input.u8()?;
    if version != VERSION {
        return Err(malformed(format!(
            "encoding version {version}, this build reads {VERSION} (upgrade this node)"
        )));
    }
    let count = input.u32()? as usize;
    let mut ops = Vec::with_capacity(count.min(10_000));
    for _ in 0..count {
        ops.push(input.op()?);
    }
    if !input.0.is_empty() {
        return Err(malformed(format!(
            "{} bytes after the operations",
            input.0.len()
        )));
    }
    Ok(ops)
}

impl In<'_> {
    fn op(&mut self) -> Result<WriteOp> {
        let tag = self.u8()?;
        self.op_tagged(tag)
    }

    fn op_tagged(&mut self, tag: u8) -> Result<WriteOp> {
        let input = self;
        let op = match tag {
            REPORT => {
                let at = input.time()?;
                let count = input.u32()? as usize;
                let mut runs = Vec::with_capacity(count.min(10_000));
                for _ in 0..count {
                    runs.push(input.task_run()?);
                }
                WriteOp::Report { runs, at }
            }
            REGISTER => {
                let pipeline = PipelineId(input.uuid()?);
                let organization = input.opt_uuid()?.map(OrgId);
                let name = input.str()?;
                let count = input.u32()? as usize;
                let mut tasks = Vec::with_capacity(count.min(10_000));
                for _ in 0..count {
                    tasks.push(TaskDefinition {
                        task: TaskId(input.uuid()?),
                        task_type: input.task_type()?,
                        name: input.str()?,
                        is_initial: input.bool()?,
                    });
                }
                WriteOp::Register(PipelineDefinition {
                    pipeline,
                    organization,
                    name,
                    tasks,
                })
            }
            START => WriteOp::StartPipelineRun {
                pipeline: PipelineId(input.uuid()?),
                org: OrgId(input.uuid()?),
                pipeline_run: PipelineRunId(input.uuid()?),
                at: input.time()?,
            },
            ORGANIZATION => WriteOp::CreateOrganization {
                org: OrgId(input.uuid()?),
                record: OrgRecord::decode(input.bytes()?)?,
            },
            CLIENT => WriteOp::CreateClient {
                client_id: input.str()?,
                record: ClientRecord::decode(input.bytes()?)?,
            },
            REVOKE => WriteOp::RevokeClient {
                client_id: input.str()?,
                at: input.time()?,
            },
            TOKENS => {
                let client_id = input.str()?;
                let at = input.time()?;
                let redeem = match input.u8()? {
                    0 => None,
                    _ => Some(input.array::<32>()?),
                };
                let count = input.u32()? as usize;
                let mut tokens = Vec::with_capacity(count.min(16));
                for _ in 0..count {
                    let hash = input.array::<32>()?;
                    tokens.push((hash, TokenRecord::decode(input.bytes()?)?));
                }
                WriteOp::IssueTokens(IssueRequest {
                    client_id,
                    tokens,
                    redeem,
                    at,
                })
            }
            PURGE => WriteOp::PurgeTokens {
                before: input.time()?,
            },
            PRUNE => WriteOp::Prune {
                before: input.i64()?,
                limit: input.u32()? as usize,
            },
            LINEAGE => {
                let org = OrgId(input.uuid()?);
                let at = input.time()?;
                let run = input.uuid()?;
                let event_type = event_type_of(input.u8()?)?;
                let event_time = input.time()?;
                let pipeline = PipelineId(input.uuid()?);
                let pipeline_name = input.str()?;
                let task = TaskId(input.uuid()?);
                let task_name = input.str()?;
                let task_type = input.task_type()?;
                let pipeline_run = PipelineRunId(input.uuid()?);
                let has_parent = input.bool()?;
                let count = input.u32()? as usize;
                let mut parents = Vec::with_capacity(count.min(2));
                for _ in 0..count {
                    parents.push(input.uuid()?);
                }
                let error = match input.u8()? {
                    0 => None,
                    _ => Some(input.str()?),
                };
                let output = input.bytes()?.to_vec();
                WriteOp::Lineage {
                    org,
                    at,
                    event: Box::new(Observed {
                        run,
                        event_type,
                        event_time,
                        pipeline,
                        pipeline_name,
                        task,
                        task_name,
                        task_type,
                        pipeline_run,
                        has_parent,
                        parents,
                        error,
                        output,
                    }),
                }
            }
            CREATE_RULE => {
                let org = OrgId(input.uuid()?);
                let rule = input.uuid()?;
                let stored = crate::alerts::StoredRule::decode(input.bytes()?)
                    .ok_or_else(|| malformed("an alert rule that does not decode".into()))?;
                WriteOp::CreateRule {
                    org,
                    rule,
                    stored: Box::new(stored),
                }
            }
            DELETE_RULE => WriteOp::DeleteRule {
                org: OrgId(input.uuid()?),
                rule: input.uuid()?,
                at: input.time()?,
            },
            ALERT_TICK => WriteOp::AlertTick { at: input.time()? },
            FINISH_DELIVERY => WriteOp::FinishDelivery {
                serial: input.i64()? as u64,
                end: {
                    let tag = input.u8()?;
                    crate::alerts::DeliveryEnd::from_tag(tag)
                        .ok_or_else(|| malformed(format!("unknown delivery end {tag}")))?
                },
                at: input.time()?,
            },
            RETRY_DELIVERY => WriteOp::RetryDelivery {
                serial: input.i64()? as u64,
                attempts: input.u32()?,
                next_at: input.i64()?,
                error: input.str()?,
            },
            DELIVERIES => {
                let count = input.u32()? as usize;
                let mut ends = Vec::with_capacity(count.min(1_024));
                for _ in 0..count {
                    // Checked before it is read: no nesting.
                    match input.u8()? {
                        tag @ (FINISH_DELIVERY | RETRY_DELIVERY) => {
                            ends.push(input.op_tagged(tag)?)
                        }
                        other => {
                            return Err(malformed(format!(
                                "operation {other} among the ends of deliveries"
                            )));
                        }
                    }
                }
                WriteOp::Deliveries(ends)
            }
            other => return Err(malformed(format!("unknown operation {other}"))),
        };
        Ok(op)
    }
}

const EVENT_TYPES: [EventType; 6] = [
    EventType::Start,
    EventType::Running,
    EventType::Complete,
    EventType::Fail,
    EventType::Abort,
    EventType::Other,
];

fn event_type_code(event_type: EventType) -> u8 {
    EVENT_TYPES
        .iter()
        .position(|t| *t == event_type)
        .expect("every event type is listed") as u8
}

fn event_type_of(code: u8) -> Result<EventType> {
    EVENT_TYPES
        .get(usize::from(code))
        .copied()
        .ok_or_else(|| malformed(format!("unknown event type {code}")))
}

fn malformed(reason: String) -> Error {
    Error::InvalidArgument(format!("malformed operations: {reason}"))
}

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn time(&mut self, value: Timestamp) {
        self.i64(value.micros());
    }
    fn uuid(&mut self, value: Uuid) {
        self.0.extend_from_slice(value.as_bytes());
    }
    fn opt_uuid(&mut self, value: Option<Uuid>) {
        match value {
            Some(uuid) => {
                self.u8(1);
                self.uuid(uuid);
            }
            None => self.u8(0),
        }
    }
    fn bytes(&mut self, value: &[u8]) {
        self.u32(value.len() as u32);
        self.0.extend_from_slice(value);
    }
    fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }
    fn task_run(&mut self, run: &TaskRun) {
        self.uuid(run.task_run.0);
        self.uuid(run.pipeline_run.0);
        self.uuid(run.pipeline.0);
        self.uuid(run.task.0);
        self.opt_uuid(run.organization.map(|o| o.0));
        self.u8(run.task_type.code());
        self.u8(match run.state {
            RunState::Pending => 0,
            RunState::Running => 1,
            RunState::Finished => 2,
        });
        let flags = u8::from(run.is_successful)
            | u8::from(run.is_initial_task) << 1
            | u8::from(run.is_final_task) << 2
            | u8::from(run.executed_at.is_some()) << 3
            | u8::from(run.metric_value.is_some()) << 4;
        self.u8(flags);
        self.u32(run.duration_ms);
        if let Some(at) = run.executed_at {
            self.time(at);
        }
        if let Some(metric) = run.metric_value {
            self.0.extend_from_slice(&metric.to_le_bytes());
        }
        self.bytes(&run.output);
        self.u32(run.errors.len() as u32);
        for error in &run.errors {
            self.str(&error.code);
            self.str(&error.severity);
            self.str(&error.message);
        }
    }
}

struct In<'a>(&'a [u8]);

impl In<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(malformed("it ends early".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("taken N bytes"))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn bool(&mut self) -> Result<bool> {
        Ok(self.u8()? != 0)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn time(&mut self) -> Result<Timestamp> {
        let micros = self.i64()?;
        Timestamp::from_micros(micros).ok_or_else(|| malformed(format!("time {micros}")))
    }
    fn uuid(&mut self) -> Result<Uuid> {
        Ok(Uuid::from_bytes(self.array()?))
    }
    fn opt_uuid(&mut self) -> Result<Option<Uuid>> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.uuid().map(Some),
        }
    }
    fn bytes(&mut self) -> Result<&[u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn str(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| malformed("a string is not UTF-8".into()))
    }
    fn task_type(&mut self) -> Result<TaskType> {
        let code = self.u8()?;
        TaskType::from_code(code).ok_or_else(|| malformed(format!("task type {code}")))
    }
    fn task_run(&mut self) -> Result<TaskRun> {
        let task_run = TaskRunId(self.uuid()?);
        let pipeline_run = PipelineRunId(self.uuid()?);
        let pipeline = PipelineId(self.uuid()?);
        let task = TaskId(self.uuid()?);
        let organization = self.opt_uuid()?.map(OrgId);
        let task_type = self.task_type()?;
        let state = match self.u8()? {
            0 => RunState::Pending,
            1 => RunState::Running,
            2 => RunState::Finished,
            other => return Err(malformed(format!("run state {other}"))),
        };
        let flags = self.u8()?;
        let duration_ms = self.u32()?;
        let executed_at = if flags & 8 != 0 {
            Some(self.time()?)
        } else {
            None
        };
        let metric_value = if flags & 16 != 0 {
            Some(f64::from_le_bytes(self.array()?))
        } else {
            None
        };
        let output = self.bytes()?.to_vec();
        let count = self.u32()? as usize;
        let mut errors = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            errors.push(TaskError {
                code: self.str()?,
                severity: self.str()?,
                message: self.str()?,
            });
        }
        Ok(TaskRun {
            task_run,
            pipeline_run,
            pipeline,
            task,
            organization,
            task_type,
            state,
            is_successful: flags & 1 != 0,
            duration_ms,
            executed_at,
            output,
            errors,
            metric_value,
            is_initial_task: flags & 2 != 0,
            is_final_task: flags & 4 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u8) -> TaskRun {
        TaskRun {
            task_run: TaskRunId(Uuid::from_bytes([seed; 16])),
            pipeline_run: PipelineRunId(Uuid::from_bytes([seed + 1; 16])),
            pipeline: PipelineId(Uuid::from_bytes([seed + 2; 16])),
            task: TaskId(Uuid::from_bytes([seed + 3; 16])),
            organization: (seed % 2 == 0).then(|| OrgId(Uuid::from_bytes([9; 16]))),
            task_type: TaskType::ALL[usize::from(seed) % TaskType::ALL.len()],
            state: if seed % 3 == 0 {
                RunState::Running
            } else {
                RunState::Finished
            },
            is_successful: seed % 2 == 1,
            duration_ms: u32::from(seed) * 1000,
            executed_at: (seed % 3 != 0).then(|| {
                Timestamp::from_micros(1_700_000_000_000_000 + i64::from(seed)).expect("a time")
            }),
            output: vec![seed; usize::from(seed)],
            errors: vec![TaskError {
                code: "E1".into(),
                severity: "high".into(),
                message: "boom ü".into(),
            }],
            metric_value: (seed % 2 == 0).then_some(f64::from(seed) / 3.0),
            is_initial_task: seed % 2 == 0,
            is_final_task: seed % 2 == 1,
        }
    }

    #[test]
    fn operations_survive_the_round_trip() {
        let at = Timestamp::from_micros(1_700_000_123_456_789).expect("a time");
        let ops = vec![
            WriteOp::Report {
                runs: (1..6).map(run).collect(),
                at,
            },
            WriteOp::Register(PipelineDefinition {
                pipeline: PipelineId(Uuid::from_bytes([1; 16])),
                organization: Some(OrgId(Uuid::from_bytes([2; 16]))),
                name: "nightly".into(),
                tasks: vec![TaskDefinition {
                    task: TaskId(Uuid::from_bytes([3; 16])),
                    task_type: TaskType::ALL[2],
                    name: "load".into(),
                    is_initial: true,
                }],
            }),
            WriteOp::RevokeClient {
                client_id: "rl_abc".into(),
                at,
            },
            WriteOp::Prune {
                before: 1_700_000_000,
                limit: 20_000,
            },
            WriteOp::PurgeTokens { before: at },
            WriteOp::DeleteRule {
                org: OrgId(Uuid::from_bytes([2; 16])),
                rule: Uuid::from_bytes([7; 16]),
                at,
            },
            WriteOp::AlertTick { at },
            WriteOp::FinishDelivery {
                serial: 42,
                end: crate::alerts::DeliveryEnd::Gone,
                at,
            },
            WriteOp::RetryDelivery {
                serial: u64::MAX,
                attempts: 3,
                next_at: -5,
                error: "connection refused".into(),
            },
            WriteOp::Deliveries(vec![
                WriteOp::FinishDelivery {
                    serial: 7,
                    end: crate::alerts::DeliveryEnd::Delivered,
                    at,
                },
                WriteOp::RetryDelivery {
                    serial: 8,
                    attempts: 1,
                    next_at: 9,
                    error: "503".into(),
                },
            ]),
            WriteOp::Lineage {
                org: OrgId(Uuid::from_bytes([2; 16])),
                at,
                event: Box::new(Observed {
                    run: Uuid::from_bytes([4; 16]),
                    event_type: EventType::Fail,
                    event_time: at,
                    pipeline: PipelineId(Uuid::from_bytes([1; 16])),
                    pipeline_name: "etl_daily".into(),
                    task: TaskId(Uuid::from_bytes([3; 16])),
                    task_name: "etl_daily.load".into(),
                    task_type: TaskType::Processor,
                    pipeline_run: PipelineRunId(Uuid::from_bytes([5; 16])),
                    has_parent: true,
                    parents: vec![Uuid::from_bytes([5; 16]), Uuid::from_bytes([6; 16])],
                    error: Some("boom".into()),
                    output: vec![9, 8, 7],
                }),
            },
        ];
        for op in ops {
            let bytes = encode(std::slice::from_ref(&op)).expect("encodable");
            let back = decode(&bytes).expect("decodable");
            assert_eq!(format!("{:?}", [op]), format!("{back:?}"));
            // Every truncation is an error, never a panic or a different operation.
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn the_ends_of_deliveries_hold_nothing_else_and_never_nest() {
        let at = Timestamp::from_micros(1_700_000_000_000_000).expect("a time");
        // Deliveries within deliveries, as deep as a hostile publisher likes: refused at the
        // first inner tag, never read recursively.
        let mut nested = vec![VERSION, 1, 0, 0, 0];
        for _ in 0..100_000 {
            nested.extend([DELIVERIES, 1, 0, 0, 0]);
        }
        let refused = decode(&nested).unwrap_err().to_string();
        assert!(
            refused.contains("among the ends of deliveries"),
            "{refused}"
        );
        // Another operation among them is refused as well, both ways.
        let tick = encode(&[WriteOp::AlertTick { at }]).expect("encodable");
        let mut mixed = vec![VERSION, 1, 0, 0, 0, DELIVERIES, 1, 0, 0, 0];
        mixed.extend(&tick[5..]);
        let refused = decode(&mixed).unwrap_err().to_string();
        assert!(refused.contains("operation 13"), "{refused}");
        assert!(encode(&[WriteOp::Deliveries(vec![WriteOp::AlertTick { at }])]).is_err());
    }
}
