//! `runledger import`: bulk-loads newline-delimited JSON task runs. One thread reads and parses
//! while the calling thread applies large batches (each line its own atomic unit, so a rejected
//! line costs nothing to its neighbours). Rejected lines are reported with their line number and
//! reason; the import goes on.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use base64::Engine as _;
use serde::Deserialize;
use uuid::Uuid;

use super::DataDir;
use crate::engine::Engine;
use crate::model::{
    OrgId, PipelineId, PipelineRunId, ReportCounts, RunState, TaskError, TaskId, TaskRun,
    TaskRunId, TaskType,
};
use crate::store::WriteOp;
use crate::time::parse_instant;

/// Lines parsed and applied together in one transaction.
const CHUNK_LINES: usize = 200_000;
/// The page cache of a bulk load: it runs alone, and a large cache saves rereading pages.
const IMPORT_CACHE_BYTES: usize = 1 << 28;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// Files of newline-delimited JSON task runs; `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Leave the file as the import grew it, instead of repacking it afterwards (a copy of
    /// every table in key order: full pages, no free space; about a third smaller).
    #[arg(long)]
    pub no_repack: bool,
    /// Cluster mode: load through the cluster's stream at these NATS URLs (comma-separated)
    /// instead of into --data-dir.
    #[arg(long, env = "RUNLEDGER_NATS")]
    pub nats: Option<String>,
    /// Cluster mode: the master key file (or set RUNLEDGER_MASTER_KEY).
    #[arg(long, env = "RUNLEDGER_MASTER_KEY_FILE", requires = "nats")]
    pub master_key_file: Option<PathBuf>,
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Lines read, blank ones included.
    pub lines: u64,
    pub blank: u64,
    pub counts: ReportCounts,
    pub rejected: u64,
}

pub fn run(args: ImportArgs) -> Result<ExitCode, String> {
    if let Some(nats) = args.nats {
        let nats = super::cluster::NatsArgs {
            nats,
            master_key_file: args.master_key_file,
        };
        return super::import_stream::run(nats, args.files);
    }
    let engine = args.data_dir.engine_with_cache(IMPORT_CACHE_BYTES)?;
    let started = Instant::now();
    let mut progress = super::progress::Progress::new(std::io::stderr().is_terminal());
    let summary = import_files(&engine, &args.files, &mut progress)?;
    progress.clear();
    let seconds = started.elapsed().as_secs_f64();
    let applied = summary.counts.inserted + summary.counts.replaced + summary.counts.unchanged;
    println!(
        "read {} lines in {:.1} s: {} imported, {} replaced, {} unchanged, {} rejected, {} blank ({:.0} runs/s)",
        summary.lines,
        seconds,
        summary.counts.inserted,
        summary.counts.replaced,
        summary.counts.unchanged,
        summary.rejected,
        summary.blank,
        applied as f64 / seconds.max(1e-9),
    );
    drop(engine);
    if !args.no_repack {
        super::repack_and_say(&args.data_dir.data_dir)?;
    }
    Ok(if summary.rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A parsed slice of one file.
struct Chunk {
    source: usize,
    /// Bytes of the file read so far, for progress.
    offset: u64,
    /// Each line's prepared operation, or why it was rejected.
    lines: Vec<(u64, Result<WriteOp, String>)>,
    blank: u64,
    last_line: u64,
}

/// Where an import reports as it goes.
pub trait ImportSink {
    /// A rejected line: `file:line: reason`.
    fn rejected(&mut self, line: String);
    /// Progress after each chunk: the file, bytes of it read, its size if known, totals so far.
    fn progress(
        &mut self,
        _file: &str,
        _offset: u64,
        _size: Option<u64>,
        _summary: &ImportSummary,
    ) {
    }
}

/// Imports every file in order, telling `sink` about each rejected line.
pub fn import_files(
    engine: &Engine,
    files: &[PathBuf],
    sink: &mut dyn ImportSink,
) -> Result<ImportSummary, String> {
    let names: Vec<String> = files
        .iter()
        .map(|f| match f.to_str() {
            Some("-") => "standard input".to_string(),
            _ => f.display().to_string(),
        })
        .collect();
    let sizes: Vec<Option<u64>> = files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        })
        .collect();
    let mut summary = ImportSummary::default();
    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::sync_channel::<Result<Chunk, String>>(2);
        scope.spawn(move || {
            for (source, path) in files.iter().enumerate() {
                if let Err(e) = read_file(engine, source, path, &sender) {
                    let _ = sender.send(Err(e));
                    return;
                }
            }
        });
        for chunk in receiver {
            let chunk = chunk?;
            let (source, offset) = (chunk.source, chunk.offset);
            apply_chunk(engine, chunk, &names[source], &mut summary, sink)?;
            sink.progress(&names[source], offset, sizes[source], &summary);
        }
        Ok::<(), String>(())
    })?;
    Ok(summary)
}

/// The lines of an import file, one at a time: each decoded on its own (a line that is not
/// UTF-8 is reported as such, and the next one read as usual), with a UTF-8 byte order mark at
/// the start of the file dropped.
pub struct Lines<R> {
    reader: R,
    buffer: Vec<u8>,
    number: u64,
}

/// One line of an import file.
pub struct Line<'a> {
    /// Its number, from 1.
    pub number: u64,
    /// The bytes it took in the file, newline included.
    pub bytes: usize,
    /// Its text without the newline, or why it has none.
    pub text: Result<&'a str, &'static str>,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Lines<R> {
        Lines {
            reader,
            buffer: Vec::new(),
            number: 0,
        }
    }

    /// The next line, or `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.buffer.clear();
        let bytes = self.reader.read_until(b'\n', &mut self.buffer)?;
        if bytes == 0 {
            return Ok(None);
        }
        self.number += 1;
        let mut line = self.buffer.as_slice();
        if self.number == 1 {
            line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some(Line {
            number: self.number,
            bytes,
            text: std::str::from_utf8(line).map_err(|_| "the line is not valid UTF-8"),
        }))
    }
}

/// A file to import, or standard input for `-`.
pub fn open_input(path: &Path) -> Result<Box<dyn Read>, String> {
    if path.to_str() == Some("-") {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Box::new(file))
}

fn read_file(
    engine: &Engine,
    source: usize,
    path: &Path,
    sender: &mpsc::SyncSender<Result<Chunk, String>>,
) -> Result<(), String> {
    let mut lines = Lines::new(BufReader::with_capacity(1 << 20, open_input(path)?));
    let mut offset = 0u64;
    let mut chunk = Chunk {
        source,
        offset: 0,
        lines: Vec::with_capacity(CHUNK_LINES),
        blank: 0,
        last_line: 0,
    };
    loop {
        let line = lines
            .next_line()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let Some(line) = line else {
            break;
        };
        let number = line.number;
        offset += line.bytes as u64;
        match line.text {
            Err(not_utf8) => chunk.lines.push((number, Err(not_utf8.into()))),
            Ok(text) if text.trim().is_empty() => chunk.blank += 1,
            Ok(text) => {
                let prepared = parse_line(text.trim())
                    .and_then(|run| engine.prepare_import(run).map_err(|e| e.to_string()));
                chunk.lines.push((number, prepared));
            }
        }
        chunk.last_line = number;
        if chunk.lines.len() >= CHUNK_LINES {
            chunk.offset = offset;
            let full = std::mem::replace(
                &mut chunk,
                Chunk {
                    source,
                    offset,
                    lines: Vec::with_capacity(CHUNK_LINES),
                    blank: 0,
                    last_line: number,
                },
            );
            if sender.send(Ok(full)).is_err() {
                return Ok(());
            }
        }
    }
    chunk.offset = offset;
    let _ = sender.send(Ok(chunk));
    Ok(())
}

fn apply_chunk(
    engine: &Engine,
    chunk: Chunk,
    name: &str,
    summary: &mut ImportSummary,
    sink: &mut dyn ImportSink,
) -> Result<(), String> {
    let mut ops = Vec::with_capacity(chunk.lines.len());
    let mut numbers = Vec::with_capacity(chunk.lines.len());
    let read = chunk.lines.len() as u64 + chunk.blank;
    for (number, parsed) in chunk.lines {
        match parsed {
            Ok(op) => {
                ops.push(op);
                numbers.push(number);
            }
            Err(reason) => {
                summary.rejected += 1;
                sink.rejected(format!("{name}:{number}: {reason}"));
            }
        }
    }
    let outcomes = engine.apply_imports(&ops).map_err(|e| {
        format!(
            "import stopped at {name} line {}: {e}",
            numbers.first().copied().unwrap_or(chunk.last_line)
        )
    })?;
    for (number, outcome) in numbers.into_iter().zip(outcomes) {
        match outcome {
            Ok(counts) => summary.counts.add(counts),
            Err(reason) => {
                summary.rejected += 1;
                sink.rejected(format!("{name}:{number}: {reason}"));
            }
        }
    }
    summary.lines += read;
    summary.blank += chunk.blank;
    Ok(())
}

/// A task run as written in an import line; every field optional so that a missing one gets a
/// message naming it. An envelope (`{"headers":{...},"message":{...}}`) carries it in `message`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRun<'a> {
    #[serde(borrow)]
    task_run_uuid: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "workflow_run_uuid")]
    pipeline_run_uuid: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "workflow_uuid")]
    pipeline_uuid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    task_uuid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    task_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    organization_uuid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    state: Option<Cow<'a, str>>,
    is_successful: Option<bool>,
    duration: Option<u64>,
    #[serde(borrow, alias = "executedAt")]
    executed_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    output: Option<Cow<'a, str>>,
    errors: Option<Vec<RawError>>,
    metric_value: Option<f64>,
    is_initial_task: Option<bool>,
    is_final_task: Option<bool>,
    #[serde(borrow)]
    message: Option<Box<RawRun<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawError {
    code: Option<serde_json::Value>,
    severity: Option<String>,
    message: Option<String>,
}

/// Parses one import line into a task run, or says why it is not one.
pub fn parse_line(line: &str) -> Result<TaskRun, String> {
    let raw: RawRun<'_> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON task run: {e}"))?;
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
