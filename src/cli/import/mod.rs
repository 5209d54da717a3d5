//! `runledger import`: bulk-loads newline-delimited JSON task runs. The files are read and parsed
//! on every core ([`read`]), their runs sorted by pipeline and time whatever order they come in
//! ([`order`]), then written a chunk per transaction (each line its own atomic unit, so a
//! rejected line costs nothing to its neighbours). Lines that cannot be parsed are reported as
//! they are read, lines the store refuses once all are written; each with its line number and
//! reason, in the files' order. The import goes on past them.

mod flat;
mod lines;
mod ndjson;
mod order;
mod progress;
mod read;
mod stream;
mod ylem;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::DataDir;
use crate::engine::Engine;
use crate::error::Error;
use crate::model::{ReportCounts, TaskRun};
use crate::store::{Chunk, WriteOp};

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

/// Runs applied together before they are written out (all in one transaction).
const CHUNK_RUNS: u64 = 200_000;
/// The runs held in memory before the sort goes on in parts on disk, in bytes.
const SORT_BUDGET: usize = 384 << 20;
/// Where the sorted parts go, inside the data dir (removed when the import ends).
const SORT_DIR: &str = "import.sort";
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
    /// Runs applied before they are written out to the tables (all in the import's one
    /// transaction): what the import holds in memory while writing grows with it.
    #[arg(long, default_value_t = CHUNK_RUNS, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_runs: u64,
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
    let settings = ImportSettings {
        chunk_runs: args.chunk_runs as usize,
        ..ImportSettings::default()
    };
    let summary = import_files_with(&engine, args.format, &args.files, &mut progress, settings)?;
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

/// Where an import reports as it goes.
pub trait ImportSink {
    /// A rejected line: `file:line: reason`.
    fn rejected(&mut self, line: String);
    /// Something worth knowing about how the import goes.
    fn note(&mut self, _message: String) {}
    /// Reading progress after each block: the file, bytes of it read, its size if known,
    /// totals so far.
    fn progress(
        &mut self,
        _file: &str,
        _offset: u64,
        _size: Option<u64>,
        _summary: &ImportSummary,
    ) {
    }
    /// Writing progress after each transaction: runs written of all runs read.
    fn writing(&mut self, _written: u64, _total: u64) {}
}

/// How much an import holds in memory.
#[derive(Clone, Copy, Debug)]
pub struct ImportSettings {
    /// Runs applied before they are written out to the tables.
    pub chunk_runs: usize,
    /// Bytes of runs sorted in memory; beyond, sorted parts go to disk.
    pub sort_budget: usize,
}

impl Default for ImportSettings {
    fn default() -> ImportSettings {
        ImportSettings {
            chunk_runs: CHUNK_RUNS as usize,
            sort_budget: SORT_BUDGET,
        }
    }
}

/// Imports every file (see the module docs), telling `sink` about each rejected line.
pub fn import_files(
    engine: &Engine,
    format: ImportFormat,
    files: &[PathBuf],
    sink: &mut dyn ImportSink,
) -> Result<ImportSummary, String> {
    import_files_with(engine, format, files, sink, ImportSettings::default())
}

/// [`import_files`] with these settings.
pub fn import_files_with(
    engine: &Engine,
    format: ImportFormat,
    files: &[PathBuf],
    sink: &mut dyn ImportSink,
    settings: ImportSettings,
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
    let dir = engine.store().data_dir().join(SORT_DIR);
    // What an import stopped midway left behind.
    let _ = std::fs::remove_dir_all(&dir);
    let mut sorter = order::Sorter::new(dir, settings.sort_budget);
    let mut runs = 0u64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    read::read(engine, format, files, threads, |block| {
        summary.lines += block.lines.len() as u64 + block.blank;
        summary.blank += block.blank;
        for (number, prepared) in block.lines {
            match prepared {
                Ok(prepared) => {
                    sorter.push(order::Position::new(block.source, number), prepared)?;
                    runs += 1;
                }
                Err(reason) => {
                    summary.rejected += 1;
                    sink.rejected(format!("{}:{number}: {reason}", names[block.source]));
                }
            }
        }
        sink.progress(
            &names[block.source],
            block.offset,
            sizes[block.source],
            &summary,
        );
        Ok(())
    })?;
    if let Some(why) = sorter.kept_order() {
        sink.note(format!("writing the runs in the input's order: {why}"));
    }
    let read = started.elapsed();
    let mut sorted = sorter.finish()?;
    tracing::debug!(?read, sorted = ?started.elapsed() - read, runs, "import read");
    // One transaction for the whole import, written a chunk at a time.
    let positions = std::cell::RefCell::new(Vec::new());
    let mut refused: Vec<(order::Position, String)> = Vec::new();
    let mut written = 0u64;
    let mut counts = ReportCounts::default();
    let outcome = engine.import_chunks(
        || {
            let Some((chunk, once)) = sorted
                .next_chunk(settings.chunk_runs)
                .map_err(Error::InvalidArgument)?
            else {
                return Ok(None);
            };
            let mut positions = positions.borrow_mut();
            positions.clear();
            positions.extend(chunk.iter().map(order::Item::position));
            let ops = chunk
                .into_iter()
                .map(|item| WriteOp::Report {
                    runs: vec![item.run],
                    at: item.at,
                })
                .collect();
            Ok(Some(Chunk {
                ops,
                new_task_runs: once,
            }))
        },
        |ops, outcomes| {
            let positions = positions.borrow();
            for (position, outcome) in positions.iter().zip(outcomes) {
                match outcome {
                    Ok(done) => counts.add(done),
                    Err(reason) => refused.push((*position, reason.to_string())),
                }
            }
            written += ops.len() as u64;
            sink.writing(written, runs);
            Ok(())
        },
    );
    outcome.map_err(|e| format!("import stopped, nothing of it was written: {e}"))?;
    summary.counts.add(counts);
    tracing::debug!(written = ?started.elapsed(), "import written");
    refused.sort_by_key(|(position, _)| *position);
    summary.rejected += refused.len() as u64;
    for (position, reason) in refused {
        let name = &names[position.source()];
        sink.rejected(format!("{name}:{}: {reason}", position.line()));
    }
    Ok(summary)
}
