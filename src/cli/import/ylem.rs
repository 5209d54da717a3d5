//! The reference platform's export as is: a ClickHouse `FORMAT JSONEachRow` dump of its task-run
//! statistics table, one row per line (`runledger import --format ylem`). Its `output` is a
//! ClickHouse String, raw bytes in a JSON string (not necessarily UTF-8); its flags are UInt8
//! 0/1, `executed_at` a DateTime64(6, 'UTC') (`2024-01-01 12:00:00.000000`), `duration` UInt32
//! milliseconds. Columns runledger does not keep (`executor_uuid`, `creator_uuid`,
//! `pipeline_type`) and any others are ignored.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::model::{
    OrgId, PipelineId, PipelineRunId, RunState, TaskError, TaskId, TaskRun, TaskRunId, TaskType,
};
use crate::time::parse_instant;

/// One exported row; every column kept raw so that a bad value gets a message naming it.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Row<'a> {
    #[serde(borrow)]
    uuid: Option<&'a RawValue>,
    #[serde(borrow)]
    organization_uuid: Option<&'a RawValue>,
    #[serde(borrow)]
    pipeline_uuid: Option<&'a RawValue>,
    #[serde(borrow)]
    pipeline_run_uuid: Option<&'a RawValue>,
    #[serde(borrow)]
    task_uuid: Option<&'a RawValue>,
    #[serde(borrow)]
    task_type: Option<&'a RawValue>,
    output: Option<Bytes>,
    #[serde(borrow)]
    metric_value: Option<&'a RawValue>,
    #[serde(borrow)]
    is_metric_value_set: Option<&'a RawValue>,
    #[serde(borrow)]
    is_initial_task: Option<&'a RawValue>,
    #[serde(borrow)]
    is_final_task: Option<&'a RawValue>,
    #[serde(borrow)]
    is_successful: Option<&'a RawValue>,
    #[serde(borrow)]
    is_fatal_failure: Option<&'a RawValue>,
    #[serde(borrow)]
    executed_at: Option<&'a RawValue>,
    #[serde(borrow)]
    duration: Option<&'a RawValue>,
}

/// A JSON string's bytes as they are, escapes decoded, UTF-8 or not.
#[derive(Default)]
struct Bytes(Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        struct Raw;
        impl Visitor<'_> for Raw {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(bytes.to_vec()))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Bytes, E> {
                Ok(Bytes(text.as_bytes().to_vec()))
            }
        }
        deserializer.deserialize_bytes(Raw)
    }
}

/// What a fatal failure becomes among the run's errors (the export has no error list).
pub const FATAL_FAILURE: &str = "fatal failure";

/// Parses one exported row into a task run, or says why it is not one.
pub fn parse_row(line: &[u8]) -> Result<TaskRun, String> {
    let row: Row<'_> =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON row of the export: {e}"))?;
    let task_run = TaskRunId(uuid(row.uuid, "uuid")?);
    let organization = OrgId(uuid(row.organization_uuid, "organization_uuid")?);
    let pipeline = PipelineId(uuid(row.pipeline_uuid, "pipeline_uuid")?);
    let pipeline_run = PipelineRunId(uuid(row.pipeline_run_uuid, "pipeline_run_uuid")?);
    let task = TaskId(uuid(row.task_uuid, "task_uuid")?);
    let task_type = text(row.task_type, "task_type")?
        .parse::<TaskType>()
        .map_err(|e| format!("task_type: {e}"))?;
    let executed_at = parse_instant(&text(row.executed_at, "executed_at")?)
        .map_err(|e| format!("executed_at: {e}"))?;
    let duration = number(row.duration, "duration")?;
    let duration_ms = if duration.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&duration)
    {
        duration as u32
    } else {
        return Err(format!(
            "duration: {duration} is not a UInt32 of milliseconds"
        ));
    };
    let metric_value = match flag(row.is_metric_value_set, "is_metric_value_set")? {
        Some(true) => Some(number(row.metric_value, "metric_value")?),
        _ => None,
    };
    let is_successful =
        flag(row.is_successful, "is_successful")?.ok_or("missing field `is_successful`")?;
    let errors = match flag(row.is_fatal_failure, "is_fatal_failure")? {
        Some(true) => vec![TaskError {
            code: String::new(),
            severity: "fatal".into(),
            message: FATAL_FAILURE.into(),
        }],
        _ => Vec::new(),
    };
    let run = TaskRun {
        task_run,
        pipeline_run,
        pipeline,
        task,
        organization: Some(organization),
        task_type,
        state: RunState::Finished,
        is_successful,
        duration_ms,
        executed_at: Some(executed_at),
        output: row.output.unwrap_or_default().0,
        errors,
        metric_value,
        is_initial_task: flag(row.is_initial_task, "is_initial_task")?.unwrap_or(false),
        is_final_task: flag(row.is_final_task, "is_final_task")?.unwrap_or(false),
    };
    run.validate()
        .map_err(|(field, reason)| format!("{field}: {reason}"))?;
    Ok(run)
}

fn present<'a>(value: Option<&'a RawValue>, field: &str) -> Result<&'a str, String> {
    match value.map(RawValue::get) {
        None | Some("null") => Err(format!("missing field `{field}`")),
        Some(raw) => Ok(raw),
    }
}

fn text(value: Option<&RawValue>, field: &str) -> Result<String, String> {
    let raw = present(value, field)?;
    serde_json::from_str::<String>(raw)
        .map_err(|_| format!("{field}: {} is not a string", crate::error::quote(raw)))
}

fn uuid(value: Option<&RawValue>, field: &str) -> Result<Uuid, String> {
    let text = text(value, field)?;
    Uuid::parse_str(&text)
        .map_err(|_| format!("{field}: {} is not a UUID", crate::error::quote(&text)))
}

/// A number, written as ClickHouse writes one: plain, or quoted (64-bit integers, with
/// `output_format_json_quote_64bit_integers`).
fn number(value: Option<&RawValue>, field: &str) -> Result<f64, String> {
    let raw = present(value, field)?;
    let unquoted = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    unquoted
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("{field}: {} is not a number", crate::error::quote(raw)))
}

/// A UInt8 flag: 0 or 1 (true and false accepted too); `None` when the column is absent.
fn flag(value: Option<&RawValue>, field: &str) -> Result<Option<bool>, String> {
    match value.map(RawValue::get) {
        None | Some("null") => Ok(None),
        Some("0" | "false" | "\"0\"") => Ok(Some(false)),
        Some("1" | "true" | "\"1\"") => Ok(Some(true)),
        Some(raw) => Err(format!(
            "{field}: {} is not 0 or 1",
            crate::error::quote(raw)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &[u8] = br#"{"uuid":"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d","executor_uuid":"11111111-2222-4333-8444-555555555555","organization_uuid":"0b4e7a0e-5a2b-4f5c-9d7e-1a2b3c4d5e6f","creator_uuid":"22222222-2222-4333-8444-555555555555","pipeline_uuid":"449c3c47-427e-465e-b1d2-0bf257b714e4","pipeline_run_uuid":"95295cbc-cee7-49cc-a11a-2f1788423934","task_uuid":"eff48172-2e75-4229-aff9-6c5d658db248","task_type":"query","output":"[{\"a\":1}]","pipeline_type":"generic","metric_value":0,"is_metric_value_set":0,"is_initial_task":1,"is_final_task":0,"is_successful":1,"is_fatal_failure":0,"executed_at":"2024-01-01 12:00:00.250000","duration":105}"#;

    fn with(from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(ROW.to_vec())
            .unwrap()
            .replacen(from, to, 1)
            .into_bytes()
    }

    #[test]
    fn reads_a_row_as_clickhouse_writes_it() {
        let run = parse_row(ROW).unwrap();
        assert_eq!(
            run.task_run.0.to_string(),
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
        );
        assert_eq!(run.output, br#"[{"a":1}]"#);
        assert_eq!(run.duration_ms, 105);
        assert_eq!(run.metric_value, None);
        assert!(run.is_successful && run.is_initial_task && !run.is_final_task);
        assert!(run.errors.is_empty());
        assert_eq!(
            run.executed_at.unwrap().to_string(),
            "2024-01-01T12:00:00.250Z"
        );
    }

    #[test]
    fn output_bytes_need_not_be_utf8_and_the_metric_counts_only_when_set() {
        let mut raw = with(r#""output":"[{\"a\":1}]""#, r#""output":"OUT""#);
        let at = raw.windows(3).position(|w| w == b"OUT").unwrap();
        raw.splice(at..at + 3, [0xff, 0xfe, b'\\', b'n']);
        assert_eq!(parse_row(&raw).unwrap().output, [0xff, 0xfe, b'\n']);
        let set = with(
            r#""metric_value":0,"is_metric_value_set":0"#,
            r#""metric_value":1.5,"is_metric_value_set":1"#,
        );
        assert_eq!(parse_row(&set).unwrap().metric_value, Some(1.5));
        let unset = with(r#""metric_value":0,"#, r#""metric_value":7,"#);
        assert_eq!(parse_row(&unset).unwrap().metric_value, None);
    }

    #[test]
    fn a_fatal_failure_is_kept_as_an_error() {
        let run = parse_row(&with(
            r#""is_successful":1,"is_fatal_failure":0"#,
            r#""is_successful":0,"is_fatal_failure":1"#,
        ))
        .unwrap();
        assert!(!run.is_successful);
        assert_eq!(run.errors[0].severity, "fatal");
    }

    #[test]
    fn rejections_name_the_column() {
        let cases = [
            (
                with(r#""uuid":"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d","#, ""),
                "missing field `uuid`",
            ),
            (
                with("\"query\"", "\"sql\""),
                "task_type: `sql` is not a task type",
            ),
            (
                with("\"duration\":105", "\"duration\":-1"),
                "duration: -1 is not a UInt32",
            ),
            (
                with("\"duration\":105", "\"duration\":4294967296"),
                "is not a UInt32",
            ),
            (
                with("\"is_successful\":1", "\"is_successful\":2"),
                "is_successful: `2` is not 0 or 1",
            ),
            (
                with("2024-01-01 12:00:00.250000", "2024-02-30 12:00:00"),
                "executed_at:",
            ),
            (
                with("\"pipeline_uuid\":\"449c", "\"pipeline_uuid\":\"x49c"),
                "pipeline_uuid: ",
            ),
            (b"{".to_vec(), "not a JSON row of the export"),
        ];
        for (line, reason) in cases {
            let error = parse_row(&line).unwrap_err();
            assert!(
                error.contains(reason),
                "{}\n=> {error}",
                String::from_utf8_lossy(&line)
            );
        }
    }
}
