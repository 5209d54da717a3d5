//! An OpenLineage `RunEvent` as runledger reads it: the handful of fields the mapping needs,
//! validated, every refusal naming its field. Unknown fields and facets are ignored; the spec
//! version is read from `schemaURL` and anything 2-0-x is accepted.

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::quote;
use crate::model::check_name;
use crate::time::{Timestamp, parse_instant};

/// The largest event body accepted, in bytes.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The longest error message kept from an `errorMessage` facet, in bytes (longer ones are cut
/// at a character boundary).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// The most output datasets kept from one event.
pub const MAX_OUTPUTS: usize = 100;

/// Where a run is in its life, as its event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Start,
    Running,
    Complete,
    Fail,
    Abort,
    /// `OTHER`, or no `eventType`: the run is known, its state does not change.
    Other,
}

impl EventType {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventType::Complete | EventType::Fail | EventType::Abort
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Start => "START",
            EventType::Running => "RUNNING",
            EventType::Complete => "COMPLETE",
            EventType::Fail => "FAIL",
            EventType::Abort => "ABORT",
            EventType::Other => "OTHER",
        }
    }
}

/// A job: its namespace and name, as the emitter spells them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Job {
    pub namespace: String,
    pub name: String,
}

/// A run named by a `parent` facet (the parent itself, or its `root`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOf {
    pub run: Uuid,
    pub job: Job,
}

/// What one event says about one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEvent {
    pub event_type: EventType,
    pub event_time: Timestamp,
    pub run: Uuid,
    pub job: Job,
    /// `run.facets.parent`, when present.
    pub parent: Option<RunOf>,
    /// `run.facets.parent.root`, when present.
    pub root: Option<RunOf>,
    /// `run.facets.errorMessage.message`, when present.
    pub error_message: Option<String>,
    /// The output datasets, `namespace/name` each, in the event's order.
    pub outputs: Vec<String>,
    /// The job's `jobType` facet's `jobType` (`QUERY`, `TASK`, `DAG`, ...), when present.
    pub job_type: Option<String>,
}

impl RunEvent {
    /// The run whose job is the pipeline: the root, else the parent.
    pub fn pipeline_run(&self) -> Option<&RunOf> {
        self.root.as_ref().or(self.parent.as_ref())
    }
}

/// What a body held: a run event, or an event of another kind (a `DatasetEvent` or `JobEvent`,
/// static metadata that runledger has no use for).
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    Run(Box<RunEvent>),
    Ignored(&'static str),
}

/// Why an event was refused: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub reason: String,
}

fn refuse(field: &str, reason: impl Into<String>) -> Refusal {
    Refusal {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Reads one event body.
pub fn parse(body: &[u8]) -> Result<Parsed, Refusal> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(refuse(
            "body",
            format!(
                "is {} bytes; an event is at most {MAX_EVENT_BYTES}",
                body.len()
            ),
        ));
    }
    // One pass into the few fields read (each as any JSON value, so that a wrong type is
    // refused naming its field); everything else is skipped unparsed.
    let raw: RawEvent = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => refuse("body", "must be a JSON object (one RunEvent)"),
        _ => refuse("body", format!("is not JSON: {e}")),
    })?;
    let schema = match &raw.schema_url {
        None | Some(Value::Null) => return Err(refuse("schemaURL", "is required")),
        Some(Value::String(schema)) => schema.as_str(),
        Some(_) => return Err(refuse("schemaURL", "must be a string")),
    };
    check_schema(schema)?;
    let kind = schema.rsplit_once('#').map(|(_, fragment)| fragment);
    match kind {
        Some(fragment) if fragment.ends_with("/DatasetEvent") => {
            return Ok(Parsed::Ignored("DatasetEvent"));
        }
        Some(fragment) if fragment.ends_with("/JobEvent") => {
            return Ok(Parsed::Ignored("JobEvent"));
        }
        _ => {}
    }
    raw.check().map(|event| Parsed::Run(Box::new(event)))
}

/// Accepts `.../spec/2-0-x/OpenLineage.json...`; refuses another major or minor version.
fn check_schema(schema: &str) -> Result<(), Refusal> {
    let version = schema
        .split('/')
        .find(|part| {
            let mut numbers = part.split('-');
            part.len() <= 16
                && numbers.clone().count() == 3
                && numbers.all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .ok_or_else(|| {
            refuse(
                "schemaURL",
                format!(
                    "{} names no spec version (such as .../spec/2-0-2/OpenLineage.json)",
                    quote(schema)
                ),
            )
        })?;
    if !version.starts_with("2-0-") {
        return Err(refuse(
            "schemaURL",
            format!("spec version {version} is not supported; 2-0-x is"),
        ));
    }
    Ok(())
}

/// The fields of an event that are read.
#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "schemaURL")]
    schema_url: Option<Value>,
    #[serde(rename = "eventType")]
    event_type: Option<Value>,
    #[serde(rename = "eventTime")]
    event_time: Option<Value>,
    run: Option<Value>,
    job: Option<Value>,
    outputs: Option<Value>,
}

/// `value` as an object, or the refusal naming `field`.
fn object<'a>(
    value: Option<&'a Value>,
    field: &str,
) -> Result<&'a serde_json::Map<String, Value>, Refusal> {
    match value {
        None | Some(Value::Null) => Err(refuse(field, "is required")),
        Some(Value::Object(object)) => Ok(object),
        Some(_) => Err(refuse(field, "must be an object")),
    }
}

impl RawEvent {
    fn check(self) -> Result<RunEvent, Refusal> {
        let event_type = match &self.event_type {
            None | Some(Value::Null) => EventType::Other,
            Some(Value::String(text)) => match text.as_str() {
                "START" => EventType::Start,
                "RUNNING" => EventType::Running,
                "COMPLETE" => EventType::Complete,
                "FAIL" => EventType::Fail,
                "ABORT" => EventType::Abort,
                "OTHER" => EventType::Other,
                other => {
                    return Err(refuse(
                        "eventType",
                        format!(
                            "{} is not an event type (one of START, RUNNING, COMPLETE, FAIL, ABORT, OTHER)",
                            quote(other)
                        ),
                    ));
                }
            },
            Some(_) => return Err(refuse("eventType", "must be a string")),
        };
        let event_time = match &self.event_time {
            None | Some(Value::Null) => return Err(refuse("eventTime", "is required")),
            Some(Value::String(text)) => {
                parse_instant(text).map_err(|reason| refuse("eventTime", reason))?
            }
            Some(_) => return Err(refuse("eventTime", "must be a string")),
        };
        let run = object(self.run.as_ref(), "run")?;
        let run_id = uuid_field(run.get("runId"), "run.runId")?;
        let job = object(self.job.as_ref(), "job")?;
        let job_type = job
            .get("facets")
            .and_then(|facets| facets.get("jobType"))
            .and_then(|facet| facet.get("jobType"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let job = job_of(job.get("namespace"), job.get("name"), "job")?;
        let no_facets = serde_json::Map::new();
        let facets = match run.get("facets") {
            None | Some(Value::Null) => &no_facets,
            Some(Value::Object(facets)) => facets,
            Some(_) => return Err(refuse("run.facets", "must be an object")),
        };
        let (parent, root) = match facets.get("parent") {
            None | Some(Value::Null) => (None, None),
            Some(parent) => {
                let of = run_of(parent, "run.facets.parent")?;
                let root = match parent.get("root") {
                    None | Some(Value::Null) => None,
                    Some(root) => Some(run_of(root, "run.facets.parent.root")?),
                };
                (Some(of), root)
            }
        };
        let error_message = match facets.get("errorMessage") {
            None | Some(Value::Null) => None,
            Some(facet) => match facet.get("message") {
                Some(Value::String(message)) => Some(cut(message, MAX_ERROR_MESSAGE_BYTES)),
                None | Some(Value::Null) => None,
                Some(_) => {
                    return Err(refuse(
                        "run.facets.errorMessage.message",
                        "must be a string",
                    ));
                }
            },
        };
        let datasets = match &self.outputs {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(datasets)) => datasets.as_slice(),
            Some(_) => return Err(refuse("outputs", "must be an array")),
        };
        let mut outputs = Vec::new();
        for (index, dataset) in datasets.iter().enumerate() {
            if index == MAX_OUTPUTS {
                break;
            }
            let field = format!("outputs[{index}]");
            let namespace = text_field(dataset.get("namespace"), &format!("{field}.namespace"))?;
            let name = text_field(dataset.get("name"), &format!("{field}.name"))?;
            outputs.push(format!("{namespace}/{name}"));
        }
        Ok(RunEvent {
            event_type,
            event_time,
            run: run_id,
            job,
            parent,
            root,
            error_message,
            outputs,
            job_type,
        })
    }
}

fn run_of(value: &Value, field: &str) -> Result<RunOf, Refusal> {
    if !value.is_object() {
        return Err(refuse(field, "must be an object"));
    }
    let run = value
        .get("run")
        .ok_or_else(|| refuse(&format!("{field}.run"), "is required"))?;
    let run = uuid_field(run.get("runId"), &format!("{field}.run.runId"))?;
    let job = value
        .get("job")
        .ok_or_else(|| refuse(&format!("{field}.job"), "is required"))?;
    let job = job_of(
        job.get("namespace"),
        job.get("name"),
        &format!("{field}.job"),
    )?;
    Ok(RunOf { run, job })
}

fn job_of(namespace: Option<&Value>, name: Option<&Value>, field: &str) -> Result<Job, Refusal> {
    let namespace = text_field(namespace, &format!("{field}.namespace"))?;
    let name = text_field(name, &format!("{field}.name"))?;
    check_name(&name).map_err(|reason| refuse(&format!("{field}.name"), reason))?;
    check_name(&namespace).map_err(|reason| refuse(&format!("{field}.namespace"), reason))?;
    Ok(Job { namespace, name })
}

fn text_field(value: Option<&Value>, field: &str) -> Result<String, Refusal> {
    match value {
        None | Some(Value::Null) => Err(refuse(field, "is required")),
        Some(Value::String(text)) if text.is_empty() => Err(refuse(field, "must not be empty")),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(refuse(field, "must be a string")),
    }
}

fn uuid_field(value: Option<&Value>, field: &str) -> Result<Uuid, Refusal> {
    let text = text_field(value, field)?;
    Uuid::parse_str(&text).map_err(|_| refuse(field, format!("{} is not a UUID", quote(&text))))
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

    fn event(extra: serde_json::Value) -> Vec<u8> {
        let mut base = serde_json::json!({
            "eventType": "COMPLETE",
            "eventTime": "2024-05-01T10:00:00.250Z",
            "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.0.0/client/python",
            "schemaURL": SCHEMA,
            "run": {"runId": "0190a4c6-7a4b-7cc1-9d1e-3c2a1b0f9e8d", "facets": {}},
            "job": {"namespace": "airflow", "name": "etl_daily.load"},
            "inputs": [],
            "outputs": [],
        });
        merge(&mut base, extra);
        serde_json::to_vec(&base).unwrap()
    }

    fn merge(base: &mut Value, extra: Value) {
        if let (Value::Object(base), Value::Object(extra)) = (base, extra) {
            for (key, value) in extra {
                match (base.get_mut(&key), value) {
                    (Some(slot @ Value::Object(_)), value @ Value::Object(_)) => merge(slot, value),
                    (_, Value::Null) => {
                        base.remove(&key);
                    }
                    (_, value) => {
                        base.insert(key, value);
                    }
                }
            }
        }
    }

    fn run_event(body: &[u8]) -> RunEvent {
        match parse(body).unwrap() {
            Parsed::Run(event) => *event,
            other => panic!("{other:?}"),
        }
    }

    fn refusal(body: &[u8]) -> Refusal {
        parse(body).unwrap_err()
    }

    #[test]
    fn an_airflow_task_event_is_read_with_its_parent_root_error_and_outputs() {
        let parsed = run_event(&event(serde_json::json!({
            "eventType": "FAIL",
            "run": {"facets": {
                "parent": {
                    "run": {"runId": "0190a4c6-0000-7000-8000-000000000001"},
                    "job": {"namespace": "airflow", "name": "etl_daily"},
                    "root": {
                        "run": {"runId": "0190a4c6-0000-7000-8000-000000000002"},
                        "job": {"namespace": "airflow", "name": "etl_root"}
                    }
                },
                "errorMessage": {"message": "division by zero", "programmingLanguage": "python"},
                "unknownFacet": {"anything": [1, 2]}
            }},
            "job": {"facets": {"jobType": {"jobType": "TASK", "integration": "AIRFLOW"}}},
            "outputs": [{"namespace": "postgres://db", "name": "public.sales"}],
            "somethingNew": true
        })));
        assert_eq!(parsed.event_type, EventType::Fail);
        assert_eq!(
            parsed.event_time,
            parse_instant("2024-05-01 10:00:00.25").unwrap()
        );
        assert_eq!(parsed.job.name, "etl_daily.load");
        assert_eq!(parsed.parent.as_ref().unwrap().job.name, "etl_daily");
        assert_eq!(parsed.pipeline_run().unwrap().job.name, "etl_root");
        assert_eq!(parsed.error_message.as_deref(), Some("division by zero"));
        assert_eq!(
            parsed.outputs,
            vec!["postgres://db/public.sales".to_string()]
        );
        assert_eq!(parsed.job_type.as_deref(), Some("TASK"));
    }

    #[test]
    fn every_malformed_event_is_refused_naming_its_field() {
        let cases: Vec<(Value, &str)> = vec![
            (serde_json::json!({"run": null}), "run"),
            (serde_json::json!({"job": null}), "job"),
            (serde_json::json!({"job": {"name": null}}), "job.name"),
            (
                serde_json::json!({"job": {"namespace": 3}}),
                "job.namespace",
            ),
            (serde_json::json!({"eventTime": "yesterday"}), "eventTime"),
            (serde_json::json!({"eventTime": null}), "eventTime"),
            (serde_json::json!({"run": {"runId": "run-1"}}), "run.runId"),
            (serde_json::json!({"eventType": "FINISHED"}), "eventType"),
            (
                serde_json::json!({"schemaURL": "https://openlineage.io/spec/1-0-5/OpenLineage.json"}),
                "schemaURL",
            ),
            (serde_json::json!({"schemaURL": null}), "schemaURL"),
            (
                serde_json::json!({"run": {"facets": {"parent": {"run": {"runId": "x"}}}}}),
                "run.facets.parent.run.runId",
            ),
            (
                serde_json::json!({"outputs": [{"namespace": "s3://b"}]}),
                "outputs[0].name",
            ),
        ];
        for (extra, field) in cases {
            let refused = refusal(&event(extra.clone()));
            assert_eq!(refused.field, field, "{extra}: {refused:?}");
        }
        assert_eq!(refusal(b"[1]").field, "body");
        assert_eq!(refusal(b"{").field, "body");
        let huge = vec![b' '; MAX_EVENT_BYTES + 1];
        assert!(refusal(&huge).reason.contains("at most"));
    }

    #[test]
    fn other_kinds_of_event_and_missing_event_types_are_accepted() {
        let dataset = serde_json::json!({
            "eventTime": "2024-05-01T10:00:00Z",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetEvent",
            "dataset": {"namespace": "s3://b", "name": "x"}
        });
        assert_eq!(
            parse(&serde_json::to_vec(&dataset).unwrap()).unwrap(),
            Parsed::Ignored("DatasetEvent")
        );
        let parsed = run_event(&event(serde_json::json!({"eventType": null})));
        assert_eq!(parsed.event_type, EventType::Other);
        let naive = run_event(&event(
            serde_json::json!({"eventTime": "2024-05-01T10:00:00.123456"}),
        ));
        assert_eq!(naive.event_time.subsec_micros(), 123_456);
    }

    #[test]
    fn long_error_messages_are_cut_at_a_character_boundary() {
        let message = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let parsed = run_event(&event(serde_json::json!({
            "run": {"facets": {"errorMessage": {"message": message}}}
        })));
        let kept = parsed.error_message.unwrap();
        assert!(kept.len() <= MAX_ERROR_MESSAGE_BYTES && kept.len() > MAX_ERROR_MESSAGE_BYTES - 2);
    }
}
