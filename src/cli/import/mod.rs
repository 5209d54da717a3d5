//! `runledger import`: bulk-loads newline-delimited JSON task runs. One thread reads, parses and
//! orders chunks (see [`order`]) while the calling thread applies them, a chunk per
//! transaction (each line its own atomic unit, so a rejected line costs nothing to its
//! neighbours). Rejected lines are reported with their line number and reason, in the file's
//! order; the import goes on.

mod lines;
mod ndjson;
mod order;
mod progress;
mod stream;
mod ylem;

use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use super::DataDir;
use crate::engine::Engine;
use crate::model::{ReportCounts, TaskRun};
use crate::store::WriteOp;

pub use lines::{Line, Lines, open_input};
pub use ndjson::parse_line;
pub use ylem::parse_row;

/// How the lines of an import file are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// runledger's import lines (see the README), envelopes included.
    #[default]
    Runledger,
    /// The reference platform's export as is: ClickHouse `FORMAT JSONEachRow` of its task-run
    /// statistics table.
    Ylem,
}

impl ImportFormat {
    /// A line's task run, or why it is not one; `None` for a blank line.
    pub fn parse(self, line: &Line<'_>) -> Option<Result<TaskRun, String>> {
        if line.is_blank() {
            return None;
        }
        Some(match self {
            ImportFormat::Runledger => line
                .text()
                .map_err(String::from)
                .and_then(|text| parse_line(text.trim())),
            ImportFormat::Ylem => parse_row(line.raw.trim_ascii()),
        })
    }
}

/// Lines parsed and applied together in one transaction.
const CHUNK_LINES: usize = 200_000;
/// The page cache of a bulk load: it runs alone, and a large cache saves rereading pages.
const IMPORT_CACHE_BYTES: usize = 1 << 28;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub writer_threads: super::WriterThreads,
    /// Files of newline-delimited JSON task runs; `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// How the lines are written: runledger's import lines, or `ylem`, a ClickHouse
    /// `FORMAT JSONEachRow` export of the reference platform's task-run statistics table.
    #[arg(long, value_enum, default_value_t)]
    pub format: ImportFormat,
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
        let nats = crate::cli::NatsArgs {
            nats,
            master_key_file: args.master_key_file,
        };
        return stream::run(nats, args.format, args.files);
    }
    let engine = args.data_dir.engine_with(crate::store::StoreOptions {
        cache_bytes: IMPORT_CACHE_BYTES,
        writer_threads: args.writer_threads.get(),
        ..crate::store::StoreOptions::default()
    })?;
    let started = Instant::now();
    let mut progress = progress::Progress::new(std::io::stderr().is_terminal());
    let summary = import_files(&engine, args.format, &args.files, &mut progress)?;
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
    format: ImportFormat,
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
                if let Err(e) = read_file(engine, format, source, path, &sender) {
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

fn read_file(
    engine: &Engine,
    format: ImportFormat,
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
        match format.parse(&line) {
            None => chunk.blank += 1,
            Some(parsed) => {
                let prepared =
                    parsed.and_then(|run| engine.prepare_import(run).map_err(|e| e.to_string()));
                chunk.lines.push((number, prepared));
            }
        }
        chunk.last_line = number;
        if chunk.lines.len() >= CHUNK_LINES {
            chunk.offset = offset;
            order::arrange(&mut chunk.lines);
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
    order::arrange(&mut chunk.lines);
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
    let mut rejected = Vec::new();
    let read = chunk.lines.len() as u64 + chunk.blank;
    for (number, parsed) in chunk.lines {
        match parsed {
            Ok(op) => {
                ops.push(op);
                numbers.push(number);
            }
            Err(reason) => rejected.push((number, reason)),
        }
    }
    let outcomes = engine.apply_imports(&ops).map_err(|e| {
        format!(
            "import stopped at {name} line {}: {e}",
            numbers.iter().min().copied().unwrap_or(chunk.last_line)
        )
    })?;
    for (number, outcome) in numbers.into_iter().zip(outcomes) {
        match outcome {
            Ok(counts) => summary.counts.add(counts),
            Err(reason) => rejected.push((number, reason.to_string())),
        }
    }
    // Written in the order of `order`, reported in the file's.
    rejected.sort_by_key(|(number, _)| *number);
    summary.rejected += rejected.len() as u64;
    for (number, reason) in rejected {
        sink.rejected(format!("{name}:{number}: {reason}"));
    }
    summary.lines += read;
    summary.blank += chunk.blank;
    Ok(())
}
