//! runledger's own import lines: a task run as one JSON object (or an envelope carrying one).

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;
use uuid::Uuid;

use crate::model::{
    OrgId, PipelineId, PipelineRunId, RunState, TaskError, TaskId, TaskRun, TaskRunId, TaskType,
};
use crate::time::parse_instant;

/// A task run as written in an import line; every field optional so that a missing one gets a
/// message naming it. An envelope (`{"headers":{...},"message":{...}}`) carries it in `message`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(super) struct RawRun<'a> {
    #[serde(borrow)]
    pub(super) task_run_uuid: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "workflow_run_uuid")]
    pub(super) pipeline_run_uuid: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "workflow_uuid")]
    pub(super) pipeline_uuid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) task_uuid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) task_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) organization_uuid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) state: Option<Cow<'a, str>>,
    pub(super) is_successful: Option<bool>,
    pub(super) duration: Option<u64>,
    #[serde(borrow, alias = "executedAt")]
    pub(super) executed_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) output: Option<Cow<'a, str>>,
    pub(super) errors: Option<Vec<RawError>>,
    pub(super) metric_value: Option<f64>,
    pub(super) is_initial_task: Option<bool>,
    pub(super) is_final_task: Option<bool>,
    #[serde(borrow)]
    pub(super) message: Option<Box<RawRun<'a>>>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(super) struct RawError {
    code: Option<serde_json::Value>,
    severity: Option<String>,
    message: Option<String>,
}

/// Reads a line's fields with serde (the flat fast path's fallback, and its reference).
pub(super) fn read_with_serde(line: &str) -> Result<RawRun<'_>, String> {
    serde_json::from_str(line).map_err(|e| format!("not a JSON task run: {e}"))
}

/// Parses one import line into a task run, or says why it is not one.
pub fn parse_line(line: &str) -> Result<TaskRun, String> {
    let raw = match super::flat::read(line) {
        Some(raw) => raw,
        None => read_with_serde(line)?,
    };
    let raw = match raw.message {
        Some(message) => *message,
        None => raw,
    };
    fn required<'b>(value: &'b Option<Cow<'_, str>>, field: &str) -> Result<&'b str, String> {
        value
            .as_deref()
            .ok_or_else(|| format!("missing field `{field}`"))
    }
    fn uuid(value: &Option<Cow<'_, str>>, field: &str) -> Result<Uuid, String> {
        let text = required(value, field)?;
        Uuid::parse_str(text)
            .map_err(|_| format!("{field}: {} is not a UUID", crate::error::quote(text)))
    }
    let task_run = TaskRunId(uuid(&raw.task_run_uuid, "task_run_uuid")?);
    let pipeline_run = PipelineRunId(uuid(&raw.pipeline_run_uuid, "pipeline_run_uuid")?);
    let pipeline = PipelineId(uuid(&raw.pipeline_uuid, "pipeline_uuid")?);
    let task = TaskId(uuid(&raw.task_uuid, "task_uuid")?);
    let organization = OrgId(uuid(&raw.organization_uuid, "organization_uuid")?);
    let task_type = required(&raw.task_type, "task_type")?
        .parse::<TaskType>()
        .map_err(|e| format!("task_type: {e}"))?;
    let state = match raw.state.as_deref() {
        None => RunState::Finished,
        Some(text) => text
            .parse::<RunState>()
            .map_err(|e| format!("state: {e}"))?,
    };
    let executed_at = match raw.executed_at.as_deref() {
        Some(text) => Some(parse_instant(text).map_err(|e| format!("executed_at: {e}"))?),
        None => None,
    };
    let duration_ms = match raw.duration {
        Some(ms) => {
            u32::try_from(ms).map_err(|_| format!("duration: {ms} ms is more than 4294967295"))?
        }
        None if state == RunState::Finished => return Err("missing field `duration`".into()),
        None => 0,
    };
    let is_successful = match raw.is_successful {
        Some(ok) => ok,
        None if state == RunState::Finished => return Err("missing field `is_successful`".into()),
        None => false,
    };
    let output = match raw.output.as_deref() {
        None | Some("") => Vec::new(),
        Some(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("output: not valid base64: {e}"))?,
    };
    let errors = raw
        .errors
        .unwrap_or_default()
        .into_iter()
        .map(|e| TaskError {
            code: match e.code {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
            },
            severity: e.severity.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
        })
        .collect();
    let run = TaskRun {
        task_run,
        pipeline_run,
        pipeline,
        task,
        organization: Some(organization),
        task_type,
        state,
        is_successful,
        duration_ms,
        executed_at,
        output,
        errors,
        metric_value: raw.metric_value,
        is_initial_task: raw.is_initial_task.unwrap_or(false),
        is_final_task: raw.is_final_task.unwrap_or(false),
    };
    run.validate()
        .map_err(|(field, reason)| format!("{field}: {reason}"))?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"task_run_uuid":"ec430b94-4e22-4448-94f9-944ec650ba25","pipeline_run_uuid":"95295cbc-cee7-49cc-a11a-2f1788423934","pipeline_uuid":"449c3c47-427e-465e-b1d2-0bf257b714e4","task_uuid":"eff48172-2e75-4229-aff9-6c5d658db248","task_type":"query","organization_uuid":"0b4e7a0e-5a2b-4f5c-9d7e-1a2b3c4d5e6f","is_successful":true,"duration":105,"executed_at":"2024-03-22 12:57:49","output":"aGVsbG8=","metric_value":1.5,"errors":[{"code":42,"severity":"warning","message":"slow"}]}"#;

    #[test]
    fn parses_a_plain_line() {
        let run = parse_line(LINE).unwrap();
        assert_eq!(run.duration_ms, 105);
        assert_eq!(run.output, b"hello");
        assert_eq!(run.task_type, TaskType::Query);
        assert_eq!(run.state, RunState::Finished);
        assert_eq!(run.errors[0].code, "42");
        assert_eq!(run.executed_at.unwrap().to_string(), "2024-03-22T12:57:49Z");
    }

    #[test]
    fn parses_an_envelope_with_camel_case_time() {
        let message = LINE.replace("\"executed_at\"", "\"executedAt\"");
        let envelope =
            format!(r#"{{"headers":{{"type":"task_run.finished"}},"message":{message}}}"#);
        assert_eq!(parse_line(&envelope).unwrap(), parse_line(LINE).unwrap());
    }

    #[test]
    fn rejections_name_the_problem() {
        let cases = [
            ("{}", "missing field `task_run_uuid`"),
            ("not json", "not a JSON task run"),
            (
                &LINE.replace("\"query\"", "\"sql\""),
                "task_type: `sql` is not a task type",
            ),
            (&LINE.replace("105", "-1"), "not a JSON task run"),
            (
                &LINE.replace("2024-03-22 12:57:49", "2024-02-30 12:57:49"),
                "executed_at: `2024-02-30 12:57:49` is not a valid date",
            ),
            (&LINE.replace("aGVsbG8=", "***"), "output: not valid base64"),
            (
                &LINE.replace("ec430b94-4e22-4448-94f9-944ec650ba25", "nope"),
                "task_run_uuid: `nope` is not a UUID",
            ),
            (&LINE.replace("105", "4294967296"), "more than 4294967295"),
        ];
        for (line, reason) in cases {
            let error = parse_line(line).unwrap_err();
            assert!(error.contains(reason), "{line}\n=> {error}");
        }
    }
}
