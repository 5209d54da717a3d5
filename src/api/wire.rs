//! Translations between protobuf messages and domain types. Every field from the wire is
//! validated here, and every error names the field (`results[3].task_uuid: ...`).

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    BucketStats, EntityKind, EntityRef, LastRun, LogEntry, PipelineDefinition, PipelineId,
    PipelineOverview, PipelineRunId, RunState, Stats, TaskDefinition, TaskError, TaskId, TaskRun,
    TaskRunId, TaskType, TimeRange, WindowStats,
};
use crate::proto;
use crate::time::{MICROS_PER_SECOND, Period, Timestamp};

pub fn uuid(field: &str, text: &str) -> Result<Uuid> {
    if text.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Uuid::parse_str(text).map_err(|_| {
        Error::invalid(
            field,
            format!("{} is not a UUID", crate::error::quote(text)),
        )
    })
}

fn optional_uuid(field: &str, text: &str) -> Result<Option<Uuid>> {
    if text.is_empty() {
        Ok(None)
    } else {
        uuid(field, text).map(Some)
    }
}

pub fn timestamp(field: &str, value: Option<&prost_types::Timestamp>) -> Result<Timestamp> {
    let value = value.ok_or_else(|| Error::invalid(field, "is required"))?;
    Timestamp::from_seconds_nanos(value.seconds, value.nanos).ok_or_else(|| {
        Error::invalid(
            field,
            "must lie between the years 1 and 9999, with nanos between 0 and 999,999,999",
        )
    })
}

pub fn to_proto_timestamp(at: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.micros().div_euclid(MICROS_PER_SECOND),
        nanos: (at.subsec_micros() * 1_000) as i32,
    }
}

fn second_timestamp(second: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: second,
        nanos: 0,
    }
}

/// An inclusive second-precision range from two timestamps (sub-second parts ignored).
pub fn range(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
) -> Result<TimeRange> {
    let from = timestamp("from", from)?.second();
    let to = timestamp("to", to)?.second();
    TimeRange::new(from, to).ok_or_else(|| Error::invalid("from", "must not be after to"))
}

pub fn entity(value: Option<&proto::EntityRef>) -> Result<EntityRef> {
    let value = value.ok_or_else(|| Error::invalid("entity", "is required"))?;
    let kind = match proto::EntityKind::try_from(value.kind) {
        Ok(proto::EntityKind::Task) => EntityKind::Task,
        Ok(proto::EntityKind::Pipeline) => EntityKind::Pipeline,
        _ => return Err(Error::invalid("entity.kind", "must be TASK or PIPELINE")),
    };
    Ok(EntityRef {
        kind,
        uuid: uuid("entity.uuid", &value.uuid)?,
    })
}

pub fn period(value: i32) -> Result<Period> {
    match proto::Period::try_from(value) {
        Ok(proto::Period::Day) => Ok(Period::Day),
        Ok(proto::Period::Week) => Ok(Period::Week),
        Ok(proto::Period::Month) => Ok(Period::Month),
        Ok(proto::Period::Quarter) => Ok(Period::Quarter),
        Ok(proto::Period::Year) => Ok(Period::Year),
        _ => Err(Error::invalid(
            "period",
            "must be one of day, week, month, quarter, year",
        )),
    }
}

pub fn task_type(field: &str, value: i32) -> Result<TaskType> {
    u8::try_from(value)
        .ok()
        .and_then(TaskType::from_code)
        .ok_or_else(|| {
            Error::invalid(
                field,
                "must be one of the TASK_TYPE_ values other than UNSPECIFIED",
            )
        })
}

fn to_proto_task_type(value: TaskType) -> i32 {
    i32::from(value.code())
}

fn state(field: &str, value: i32) -> Result<RunState> {
    match proto::TaskRunState::try_from(value) {
        Ok(proto::TaskRunState::Pending) => Ok(RunState::Pending),
        Ok(proto::TaskRunState::Running) => Ok(RunState::Running),
        Ok(proto::TaskRunState::Finished) => Ok(RunState::Finished),
        _ => Err(Error::invalid(
            field,
            "must be PENDING, RUNNING or FINISHED",
        )),
    }
}

/// One reported task-run result.
pub fn task_run(field: &str, value: proto::TaskRunResult) -> Result<TaskRun> {
    let at = |name: &str| format!("{field}.{name}");
    let state = state(&at("state"), value.state)?;
    let executed_at = match &value.executed_at {
        None => None,
        Some(ts) => Some(timestamp(&at("executed_at"), Some(ts))?),
    };
    let run = TaskRun {
        task_run: TaskRunId(uuid(&at("task_run_uuid"), &value.task_run_uuid)?),
        pipeline_run: PipelineRunId(uuid(&at("pipeline_run_uuid"), &value.pipeline_run_uuid)?),
        pipeline: PipelineId(uuid(&at("pipeline_uuid"), &value.pipeline_uuid)?),
        task: TaskId(uuid(&at("task_uuid"), &value.task_uuid)?),
        organization: optional_uuid(&at("organization_uuid"), &value.organization_uuid)?
            .map(crate::model::OrgId),
        task_type: task_type(&at("task_type"), value.task_type)?,
        state,
        is_successful: value.is_successful,
        duration_ms: value.duration_ms,
        executed_at,
        output: value.output,
        errors: value
            .errors
            .into_iter()
            .map(|e| TaskError {
                code: e.code,
                severity: e.severity,
                message: e.message,
            })
            .collect(),
        metric_value: value.metric_value,
        is_initial_task: value.is_initial_task,
        is_final_task: value.is_final_task,
    };
    run.validate()
        .map_err(|(name, reason)| Error::invalid(&at(name), reason))?;
    Ok(run)
}

/// A task run as a client reports it: the inverse of [`task_run`] (used by the load tool).
pub fn to_proto_task_run(run: &TaskRun) -> proto::TaskRunResult {
    let state = match run.state {
        RunState::Pending => proto::TaskRunState::Pending,
        RunState::Running => proto::TaskRunState::Running,
        RunState::Finished => proto::TaskRunState::Finished,
    };
    proto::TaskRunResult {
        task_run_uuid: run.task_run.0.to_string(),
        pipeline_run_uuid: run.pipeline_run.0.to_string(),
        pipeline_uuid: run.pipeline.0.to_string(),
        task_uuid: run.task.0.to_string(),
        task_type: to_proto_task_type(run.task_type),
        organization_uuid: run
            .organization
            .map(|o| o.0.to_string())
            .unwrap_or_default(),
        state: state as i32,
        is_successful: run.is_successful,
        duration_ms: run.duration_ms,
        executed_at: run.executed_at.map(to_proto_timestamp),
        output: run.output.clone(),
        errors: run
            .errors
            .iter()
            .map(|e| proto::TaskError {
                code: e.code.clone(),
                severity: e.severity.clone(),
                message: e.message.clone(),
            })
            .collect(),
        metric_value: run.metric_value,
        is_initial_task: run.is_initial_task,
        is_final_task: run.is_final_task,
    }
}

/// A batch of results, each error naming its index.
pub fn task_runs(results: Vec<proto::TaskRunResult>) -> Result<Vec<TaskRun>> {
    results
        .into_iter()
        .enumerate()
        .map(|(index, result)| task_run(&format!("results[{index}]"), result))
        .collect()
}

pub fn pipeline_definition(value: proto::RegisterPipelineRequest) -> Result<PipelineDefinition> {
    let tasks = value
        .tasks
        .into_iter()
        .enumerate()
        .map(|(index, task)| {
            let field = format!("tasks[{index}]");
            Ok(TaskDefinition {
                task: TaskId(uuid(&format!("{field}.task_uuid"), &task.task_uuid)?),
                task_type: task_type(&format!("{field}.task_type"), task.task_type)?,
                name: task.name,
                is_initial: task.is_initial,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PipelineDefinition {
        pipeline: PipelineId(uuid("pipeline_uuid", &value.pipeline_uuid)?),
        organization: optional_uuid("organization_uuid", &value.organization_uuid)?
            .map(crate::model::OrgId),
        name: value.name,
        tasks,
    })
}

pub fn stats_response(stats: Stats) -> proto::StatsResponse {
    proto::StatsResponse {
        num_of_successes: stats.tally.successes,
        num_of_failures: stats.tally.failures,
        average_duration_ms: stats.tally.average_duration_ms(),
        is_last_run_successful: stats.last_run.is_some_and(|r| r.is_successful),
        last_run_executed_at: stats.last_run.map(|r| to_proto_timestamp(r.executed_at)),
        last_run_duration_ms: stats.last_run.map_or(0, |r| r.duration_ms),
        duration_p50_ms: stats.percentiles.map(|p| p.p50),
        duration_p90_ms: stats.percentiles.map(|p| p.p90),
        duration_p95_ms: stats.percentiles.map(|p| p.p95),
        duration_p99_ms: stats.percentiles.map(|p| p.p99),
        max_duration_ms: stats.percentiles.map(|p| p.max),
        approximate: stats.approximate,
    }
}

pub fn bucket(bucket: &BucketStats) -> proto::BucketStats {
    proto::BucketStats {
        date_from: Some(second_timestamp(bucket.start)),
        date_to: Some(second_timestamp(bucket.last_second)),
        num_of_successes: bucket.tally.successes,
        num_of_failures: bucket.tally.failures,
        average_duration_ms: bucket.tally.average_duration_ms(),
        duration_p50_ms: bucket.percentiles.map(|p| p.p50),
        duration_p90_ms: bucket.percentiles.map(|p| p.p90),
        duration_p95_ms: bucket.percentiles.map(|p| p.p95),
        duration_p99_ms: bucket.percentiles.map(|p| p.p99),
        max_duration_ms: bucket.percentiles.map(|p| p.max),
    }
}

pub fn window(window: &WindowStats) -> proto::WindowStats {
    proto::WindowStats {
        num_of_successes: window.tally.successes,
        num_of_failures: window.tally.failures,
        average_duration_ms: window.tally.average_duration_ms(),
        duration_p50_ms: window.percentiles.map(|p| p.p50),
        duration_p95_ms: window.percentiles.map(|p| p.p95),
    }
}

pub fn pipeline_overview(overview: &PipelineOverview) -> proto::PipelineOverview {
    let [day, week, month] = &overview.windows;
    proto::PipelineOverview {
        pipeline_uuid: overview.pipeline.to_string(),
        name: overview.name.clone(),
        last_run: overview.last_run.map(last_run),
        last_24h: Some(window(day)),
        last_7d: Some(window(week)),
        last_30d: Some(window(month)),
    }
}

pub fn last_run(run: LastRun) -> proto::LastRunStats {
    proto::LastRunStats {
        is_successful: run.is_successful,
        executed_at: Some(to_proto_timestamp(run.executed_at)),
        duration_ms: run.duration_ms,
    }
}

pub fn pending_run(run: &crate::model::PendingTaskRun) -> proto::PendingTaskRun {
    proto::PendingTaskRun {
        id: run.serial,
        task_run_uuid: run.task_run.to_string(),
        pipeline_run_uuid: run.pipeline_run.to_string(),
        pipeline_uuid: run.pipeline.to_string(),
        task_uuid: run.task.to_string(),
        task_type: to_proto_task_type(run.task_type),
        created_at: Some(to_proto_timestamp(run.created_at)),
    }
}

pub fn log_entry(entry: LogEntry) -> proto::LogEntry {
    let cursor = crate::model::LogCursor {
        executed_at: entry.executed_at,
        task_run: entry.task_run,
    };
    proto::LogEntry {
        pipeline_run_uuid: entry.pipeline_run.to_string(),
        task_run_uuid: entry.task_run.to_string(),
        task_uuid: entry.task.to_string(),
        task_type: to_proto_task_type(entry.task_type),
        is_successful: entry.is_successful,
        duration_ms: entry.duration_ms,
        output: entry.output,
        metric_value: entry.metric_value,
        executed_at: Some(to_proto_timestamp(entry.executed_at)),
        errors: entry
            .errors
            .into_iter()
            .map(|e| proto::TaskError {
                code: e.code,
                severity: e.severity,
                message: e.message,
            })
            .collect(),
        cursor: cursor.encode(),
    }
}

/// A protobuf `Struct` as JSON; whole numbers become JSON integers (protobuf has only doubles).
pub fn struct_to_json(value: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        value
            .fields
            .iter()
            .map(|(key, value)| (key.clone(), value_to_json(value)))
            .collect(),
    )
}

fn value_to_json(value: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            serde_json::json!(*n as i64)
        }
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::StringValue(s)) => serde_json::json!(s),
        Some(Kind::BoolValue(b)) => serde_json::json!(b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(value_to_json).collect())
        }
    }
}

/// JSON as a protobuf `Struct` (an object; anything else is an empty one).
pub fn json_to_struct(value: &serde_json::Value) -> prost_types::Struct {
    prost_types::Struct {
        fields: value
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| (key.clone(), json_to_value(value)))
            .collect(),
    }
}

fn json_to_value(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        object @ serde_json::Value::Object(_) => Kind::StructValue(json_to_struct(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A rule as REST's `POST /v1/alerts/rules` body, for the one rule parser.
pub fn rule_body(request: proto::CreateRuleRequest) -> serde_json::Value {
    let webhook = request.webhook.unwrap_or_default();
    let mut body = serde_json::json!({
        "name": request.name,
        "pipeline_uuid": (!request.pipeline_uuid.is_empty()).then_some(request.pipeline_uuid),
        "kind": request.kind,
        "params": request.params.as_ref().map(struct_to_json),
        "webhook": {"url": webhook.url, "secret": webhook.secret},
    });
    if !webhook.format.is_empty() {
        body["webhook"]["format"] = serde_json::json!(webhook.format);
    }
    body
}

/// A stored rule, without its secret.
pub fn alert_rule(view: &crate::engine::RuleView) -> proto::AlertRule {
    let rule = &view.stored.rule;
    proto::AlertRule {
        rule_uuid: view.rule.to_string(),
        name: rule.name.clone(),
        pipeline_uuid: rule.pipeline.map(|p| p.to_string()).unwrap_or_default(),
        kind: rule.kind.as_str().to_string(),
        params: Some(json_to_struct(&rule.kind.params())),
        webhook_url: rule.webhook.url.clone(),
        webhook_format: rule.webhook.format.as_str().to_string(),
        created_at: Timestamp::from_micros(view.stored.created_at).map(to_proto_timestamp),
    }
}

/// An alert as gRPC answers it.
pub fn alert(alert: crate::alerts::AlertRecord) -> proto::Alert {
    proto::Alert {
        alert_id: alert.alert_id.to_string(),
        rule_uuid: alert.rule.to_string(),
        pipeline_uuid: alert.pipeline.to_string(),
        state: alert.state.as_str().to_string(),
        since: Timestamp::from_micros(alert.since).map(to_proto_timestamp),
        resolved_at: alert
            .resolved_at
            .and_then(Timestamp::from_micros)
            .map(to_proto_timestamp),
        rule_name: alert.rule_name,
        kind: alert.kind,
        pipeline_name: alert.pipeline_name,
        pipeline_run_uuid: alert
            .pipeline_run
            .map(|run| run.to_string())
            .unwrap_or_default(),
        observed: Some(json_to_struct(&alert.observed)),
    }
}
