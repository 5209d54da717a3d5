//! The domain: identifiers, task runs as reported, and the stats answered about them. Pure data
//! and the rules that need no storage (what a run contributes, how tallies combine).

use std::fmt;

use uuid::Uuid;

use crate::durations::{Durations, Percentiles};
use crate::time::{Period, Timestamp};

macro_rules! uuid_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_newtype!(
    /// A tenant: OAuth clients and pipelines belong to exactly one.
    OrgId
);
uuid_newtype!(
    /// A pipeline (the reference's older name: workflow).
    PipelineId
);
uuid_newtype!(
    /// A task of a pipeline.
    TaskId
);
uuid_newtype!(
    /// One execution of a pipeline (`workflow_run_uuid` = `pipeline_run_uuid`).
    PipelineRunId
);
uuid_newtype!(
    /// One execution of one task.
    TaskRunId
);

/// Whether a stats question is about a task or a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Task,
    Pipeline,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Task => "task",
            EntityKind::Pipeline => "pipeline",
        }
    }
}

/// Names a task or a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntityRef {
    pub kind: EntityKind,
    pub uuid: Uuid,
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.uuid.hyphenated())
    }
}

/// The kind of work a task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskType {
    Query,
    Condition,
    Aggregator,
    Transformer,
    Notification,
    ApiCall,
    ForEach,
    Merge,
    Filter,
    RunPipeline,
    ExternalTrigger,
    Code,
    Gpt,
    Processor,
}

impl TaskType {
    pub const ALL: [TaskType; 14] = [
        TaskType::Query,
        TaskType::Condition,
        TaskType::Aggregator,
        TaskType::Transformer,
        TaskType::Notification,
        TaskType::ApiCall,
        TaskType::ForEach,
        TaskType::Merge,
        TaskType::Filter,
        TaskType::RunPipeline,
        TaskType::ExternalTrigger,
        TaskType::Code,
        TaskType::Gpt,
        TaskType::Processor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Query => "query",
            TaskType::Condition => "condition",
            TaskType::Aggregator => "aggregator",
            TaskType::Transformer => "transformer",
            TaskType::Notification => "notification",
            TaskType::ApiCall => "api_call",
            TaskType::ForEach => "for_each",
            TaskType::Merge => "merge",
            TaskType::Filter => "filter",
            TaskType::RunPipeline => "run_pipeline",
            TaskType::ExternalTrigger => "external_trigger",
            TaskType::Code => "code",
            TaskType::Gpt => "gpt",
            TaskType::Processor => "processor",
        }
    }

    /// The type's number in storage and in the proto enum (1-based). Never renumber.
    pub fn code(self) -> u8 {
        TaskType::ALL
            .iter()
            .position(|t| *t == self)
            .expect("every task type is in ALL") as u8
            + 1
    }

    pub fn from_code(code: u8) -> Option<TaskType> {
        TaskType::ALL
            .get(usize::from(code).checked_sub(1)?)
            .copied()
    }
}

impl std::str::FromStr for TaskType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{} is not a task type (one of {})",
                    crate::error::quote(s),
                    TaskType::ALL.map(TaskType::as_str).join(", ")
                )
            })
    }
}

/// Where a task run is in its life. Only finished task runs count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    Pending,
    Running,
    Finished,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Finished => "finished",
        }
    }
}

impl std::str::FromStr for RunState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(RunState::Pending),
            "running" => Ok(RunState::Running),
            "finished" => Ok(RunState::Finished),
            _ => Err(format!(
                "{} is not a task-run state (one of pending, running, finished)",
                crate::error::quote(s)
            )),
        }
    }
}

/// One error a task run reported.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TaskError {
    pub code: String,
    pub severity: String,
    pub message: String,
}

/// The most task runs one report batch may carry.
pub const MAX_REPORT_BATCH: usize = 10_000;

/// One task run as reported by a platform, validated. `output` is plain text on the way in and
/// the sealed envelope (see `crypto`) once the engine has encrypted it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRun {
    pub task_run: TaskRunId,
    pub pipeline_run: PipelineRunId,
    pub pipeline: PipelineId,
    pub task: TaskId,
    /// The organization named in the report; `None` means the caller's.
    pub organization: Option<OrgId>,
    pub task_type: TaskType,
    pub state: RunState,
    pub is_successful: bool,
    pub duration_ms: u32,
    /// When the task run ended. Finished task runs always have one.
    pub executed_at: Option<Timestamp>,
    pub output: Vec<u8>,
    pub errors: Vec<TaskError>,
    pub metric_value: Option<f64>,
    pub is_initial_task: bool,
    pub is_final_task: bool,
}

impl TaskRun {
    /// The rules every reported task run obeys, whichever way it came in (gRPC, import): the
    /// field that breaks one and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.state == RunState::Finished && self.executed_at.is_none() {
            return Err(("executed_at", "is required for a finished task run".into()));
        }
        if let Some(metric) = self.metric_value
            && !metric.is_finite()
        {
            return Err(("metric_value", "must be a finite number".into()));
        }
        if self.task.0 == self.pipeline.0 {
            return Err((
                "task_uuid",
                "is the same UUID as pipeline_uuid; a UUID names a pipeline or a task, not both"
                    .into(),
            ));
        }
        Ok(())
    }

    /// When the run counts in stats: finished, at this instant.
    pub fn finished_at(&self) -> Option<Timestamp> {
        match self.state {
            RunState::Finished => self.executed_at,
            RunState::Pending | RunState::Running => None,
        }
    }
}

/// A pipeline with its tasks, as registered.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineDefinition {
    pub pipeline: PipelineId,
    /// `None` means the caller's organization.
    pub organization: Option<OrgId>,
    pub name: String,
    pub tasks: Vec<TaskDefinition>,
}

/// The longest pipeline or task name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Why a name is refused, if it is: too long, or holding control characters (which would
/// break the overview's order and forge log lines).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_NAME_BYTES} are accepted",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(
            "holds a control character (a newline, NUL, ...); names are one line of text".into(),
        );
    }
    Ok(())
}

impl PipelineDefinition {
    /// The rules every registration obeys: the field that breaks one and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        check_name(&self.name).map_err(|why| ("name".to_string(), why))?;
        for (index, task) in self.tasks.iter().enumerate() {
            check_name(&task.name).map_err(|why| (format!("tasks[{index}].name"), why))?;
            let field = format!("tasks[{index}].task_uuid");
            if task.task.0 == self.pipeline.0 {
                return Err((
                    field,
                    "is the same UUID as pipeline_uuid; a UUID names a pipeline or a task, not both"
                        .into(),
                ));
            }
            if self.tasks[..index].iter().any(|t| t.task == task.task) {
                return Err((field, format!("{} is listed twice", task.task)));
            }
        }
        Ok(())
    }
}

/// A task as registered with its pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskDefinition {
    pub task: TaskId,
    pub task_type: TaskType,
    pub name: String,
    pub is_initial: bool,
}

/// Success and failure counts and the summed duration of a set of runs. Tallies form a group
/// under wrapping arithmetic, so a run's contribution can be added and later retracted exactly,
/// in any order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tally {
    pub successes: u64,
    pub failures: u64,
    pub duration_ms: u64,
}

impl Tally {
    /// The tally of one run.
    pub fn of_run(is_successful: bool, duration_ms: u64) -> Tally {
        Tally {
            successes: u64::from(is_successful),
            failures: u64::from(!is_successful),
            duration_ms,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }

    pub fn runs(&self) -> u64 {
        self.successes.saturating_add(self.failures)
    }

    /// The floor of the mean duration in milliseconds; 0 with no runs.
    pub fn average_duration_ms(&self) -> u64 {
        self.duration_ms.checked_div(self.runs()).unwrap_or(0)
    }
}

impl std::ops::Add for Tally {
    type Output = Tally;

    fn add(self, other: Tally) -> Tally {
        Tally {
            successes: self.successes.wrapping_add(other.successes),
            failures: self.failures.wrapping_add(other.failures),
            duration_ms: self.duration_ms.wrapping_add(other.duration_ms),
        }
    }
}

/// Retraction: `a + b - b == a` always, whatever the order of operations.
impl std::ops::Sub for Tally {
    type Output = Tally;

    fn sub(self, other: Tally) -> Tally {
        Tally {
            successes: self.successes.wrapping_sub(other.successes),
            failures: self.failures.wrapping_sub(other.failures),
            duration_ms: self.duration_ms.wrapping_sub(other.duration_ms),
        }
    }
}

/// What is summed over a set of runs: the tally and the distribution of durations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub tally: Tally,
    pub durations: Durations,
}

impl Summary {
    /// The summary of one run.
    pub fn of_run(is_successful: bool, duration_ms: u64) -> Summary {
        Summary {
            tally: Tally::of_run(is_successful, duration_ms),
            durations: Durations::of(duration_ms),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tally.is_empty()
    }

    /// Adds another summary of disjoint runs.
    pub fn add(&mut self, other: &Summary) {
        self.tally = self.tally + other.tally;
        self.durations.add(&other.durations);
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        self.durations.percentiles()
    }
}

/// The latest finished run of a task or pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastRun {
    pub executed_at: Timestamp,
    pub is_successful: bool,
    pub duration_ms: u64,
}

/// The answer to a range stats question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub tally: Tally,
    /// Duration percentiles of the runs counted (`None` without runs).
    pub percentiles: Option<Percentiles>,
    /// The latest run at or before the range's end (it may lie before the range's start).
    pub last_run: Option<LastRun>,
    /// The range reached before the retention cut at finer than a day and was answered at
    /// whole days there (or the last run before the cut, which is not kept, was asked for).
    pub approximate: bool,
}

/// An inclusive range of whole seconds, `from <= to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    from: i64,
    to: i64,
}

impl TimeRange {
    /// The range, or `None` when `from` is after `to`.
    pub fn new(from: i64, to: i64) -> Option<TimeRange> {
        (from <= to).then_some(TimeRange { from, to })
    }

    pub fn from(&self) -> i64 {
        self.from
    }

    pub fn to(&self) -> i64 {
        self.to
    }

    /// The first microsecond after the range.
    pub fn end_micros_exclusive(&self) -> i64 {
        (self.to + 1) * crate::time::MICROS_PER_SECOND
    }

    pub fn contains(&self, at: Timestamp) -> bool {
        (self.from..=self.to).contains(&at.second())
    }
}

/// How many buckets an aggregated-stats question asks for: 1 to 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketCount(u32);

impl BucketCount {
    pub const MAX: u32 = 1_000;

    pub fn new(n: u32) -> Result<BucketCount, String> {
        if (1..=Self::MAX).contains(&n) {
            Ok(BucketCount(n))
        } else {
            Err(format!("must be between 1 and {}, got {n}", Self::MAX))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Stats of one calendar bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketStats {
    pub period: Period,
    /// The bucket's first second.
    pub start: i64,
    /// The bucket's last second.
    pub last_second: i64,
    pub tally: Tally,
    /// Duration percentiles of the bucket's runs (`None` without runs).
    pub percentiles: Option<Percentiles>,
}

/// Which buckets an aggregated-stats answer lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fill {
    /// Only buckets with runs (the reference API's answer).
    #[default]
    Sparse,
    /// Every one of the `n` buckets, empty ones with zero counts.
    Zero,
}

impl std::str::FromStr for Fill {
    type Err = String;

    /// `zero`; the absence of the parameter is [`Fill::Sparse`].
    fn from_str(text: &str) -> Result<Fill, String> {
        match text {
            "zero" => Ok(Fill::Zero),
            other => Err(format!(
                "{} is not a fill; the only one is zero",
                crate::error::quote(other)
            )),
        }
    }
}

/// One finished task run in a pipeline's log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub pipeline_run: PipelineRunId,
    pub task_run: TaskRunId,
    pub task: TaskId,
    pub task_type: TaskType,
    pub is_successful: bool,
    pub duration_ms: u32,
    /// The sealed output envelope, empty when there was no output.
    pub output: Vec<u8>,
    pub metric_value: Option<f64>,
    pub executed_at: Timestamp,
    pub errors: Vec<TaskError>,
}

/// Where a log page starts: strictly older than this entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogCursor {
    pub executed_at: Timestamp,
    pub task_run: TaskRunId,
}

impl LogCursor {
    /// The cursor as an opaque token: 24 bytes, URL-safe base64 without padding.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&self.executed_at.micros().to_be_bytes());
        bytes[8..].copy_from_slice(self.task_run.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(token: &str) -> Result<LogCursor, String> {
        let invalid = || not_a_cursor(token);
        let bytes = cursor_bytes(token)?;
        let bytes: [u8; 24] = bytes.try_into().map_err(|_| invalid())?;
        let micros = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let executed_at = Timestamp::from_micros(micros).ok_or_else(invalid)?;
        let task_run = TaskRunId(Uuid::from_bytes(bytes[8..].try_into().expect("16 bytes")));
        Ok(LogCursor {
            executed_at,
            task_run,
        })
    }
}

/// One page of a pipeline's log, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    /// Where the next page starts, when there may be more entries in the range.
    pub next: Option<LogCursor>,
}

/// A task run that started and has not finished: what the running list shows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningTaskRun {
    pub task_run: TaskRunId,
    pub task: TaskId,
    pub task_type: TaskType,
    pub pipeline_run: PipelineRunId,
    pub started_at: Timestamp,
    /// When it was last reported.
    pub updated_at: Timestamp,
}

/// One page of a pipeline's running task runs, newest start first; the cursor is a
/// [`LogCursor`] over start instants.
#[derive(Clone, Debug, PartialEq)]
pub struct RunningPage {
    pub entries: Vec<RunningTaskRun>,
    pub next: Option<LogCursor>,
}

/// The bytes of a cursor token (URL-safe base64 without padding).
fn cursor_bytes(token: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| not_a_cursor(token))
}

fn not_a_cursor(token: &str) -> String {
    format!(
        "{} is not a cursor this server issued",
        crate::error::quote(token)
    )
}

/// The windows of the pipeline overview, in seconds: the last 24 hours, 7 days and 30 days
/// ending at the request's second.
pub const OVERVIEW_WINDOWS: [i64; 3] = [86_400, 7 * 86_400, 30 * 86_400];

/// One pipeline in the overview of an organization's pipelines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineOverview {
    pub pipeline: PipelineId,
    /// Empty for a pipeline registered without a name (or only reported).
    pub name: String,
    pub last_run: Option<LastRun>,
    /// The runs of each of [`OVERVIEW_WINDOWS`].
    pub windows: [WindowStats; 3],
}

/// The runs of a task or pipeline in a window of time: their tally and duration percentiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    pub tally: Tally,
    pub percentiles: Option<Percentiles>,
}

/// A page of the overview, sorted by name (unnamed pipelines last) then UUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverviewPage {
    pub pipelines: Vec<PipelineOverview>,
    /// Where the next page starts, when more pipelines remain.
    pub next: Option<OverviewCursor>,
}

/// Where a page of the overview ends: the last pipeline listed. Its place in the order (by
/// name) is looked up when the next page is asked for, so the cursor is 16 bytes whatever the
/// name; a pipeline renamed in between moves the next page with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverviewCursor {
    pub pipeline: PipelineId,
}

impl OverviewCursor {
    /// The cursor as an opaque token: the UUID, URL-safe base64 without padding.
    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.pipeline.0.as_bytes())
    }

    pub fn decode(token: &str) -> Result<OverviewCursor, String> {
        let bytes = cursor_bytes(token)?;
        let uuid: [u8; 16] = bytes.try_into().map_err(|_| not_a_cursor(token))?;
        Ok(OverviewCursor {
            pipeline: PipelineId(Uuid::from_bytes(uuid)),
        })
    }
}

/// A task run created by running a pipeline, waiting for an executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingTaskRun {
    /// The integer id the REST API shows; also the order of the queue.
    pub serial: u64,
    pub task_run: TaskRunId,
    pub pipeline_run: PipelineRunId,
    pub pipeline: PipelineId,
    pub task: TaskId,
    pub task_type: TaskType,
    pub organization: OrgId,
    pub created_at: Timestamp,
}

/// What a report batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportCounts {
    pub inserted: u64,
    pub replaced: u64,
    pub unchanged: u64,
}

impl ReportCounts {
    pub fn add(&mut self, other: ReportCounts) {
        self.inserted += other.inserted;
        self.replaced += other.replaced;
        self.unchanged += other.unchanged;
    }
}

/// What registering a pipeline did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterOutcome {
    pub created: bool,
    pub tasks_created: u32,
    pub tasks_updated: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_type_codes_round_trip() {
        for task_type in TaskType::ALL {
            assert_eq!(TaskType::from_code(task_type.code()), Some(task_type));
            assert_eq!(task_type.as_str().parse::<TaskType>(), Ok(task_type));
        }
        assert_eq!(TaskType::from_code(0), None);
        assert_eq!(TaskType::from_code(15), None);
    }

    #[test]
    fn tallies_retract_exactly() {
        let a = Tally::of_run(true, 10);
        let b = Tally::of_run(false, u64::MAX);
        assert_eq!(a + b - b, a);
        assert_eq!(b - a + a, b);
        assert_eq!(a - a, Tally::default());
        assert_eq!((a + Tally::of_run(true, 5)).average_duration_ms(), 7);
        assert_eq!(Tally::default().average_duration_ms(), 0);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = LogCursor {
            executed_at: Timestamp::from_micros(1_711_112_269_123_456).unwrap(),
            task_run: TaskRunId(Uuid::from_u128(42)),
        };
        assert_eq!(LogCursor::decode(&cursor.encode()), Ok(cursor));
        assert!(LogCursor::decode("not a cursor").is_err());
        assert!(LogCursor::decode("").is_err());
    }

    #[test]
    fn bucket_counts_are_bounded() {
        assert!(BucketCount::new(0).is_err());
        assert!(BucketCount::new(1).is_ok());
        assert!(BucketCount::new(1_000).is_ok());
        assert!(
            BucketCount::new(100_000)
                .unwrap_err()
                .contains("between 1 and 1000")
        );
    }
}
