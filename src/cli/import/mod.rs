//! `runledger import`: bulk-loads newline-delimited JSON task runs. The files are read and parsed
//! on every core ([`read`]), their runs sorted by pipeline and time whatever order they come in
//! ([`order`]), then written a chunk per transaction (each line its own atomic unit, so a
//! rejected line costs nothing to its neighbours). Lines that cannot be parsed are reported as
//! they are read, lines the store refuses once all are written; each with its line number and
//! reason, in the files' order. The import goes on past them.

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

/// Runs written together in one transaction.
const CHUNK_RUNS: usize = 200_000;
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

/// Imports every file (see the module docs), telling `sink` about each rejected line.
pub fn import_files(
    engine: &Engine,
    format: ImportFormat,
    files: &[PathBuf],
    sink: &mut dyn ImportSink,
) -> Result<ImportSummary, String> {
    import_files_holding(engine, format, files, sink, SORT_BUDGET)
}

/// [`import_files`] holding at most about `budget` bytes of runs in memory while sorting them
/// (the rest goes to sorted parts on disk).
pub fn import_files_holding(
    engine: &Engine,
    format: ImportFormat,
    files: &[PathBuf],
    sink: &mut dyn ImportSink,
    budget: usize,
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
    let mut sorter = order::Sorter::new(dir, budget);
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
    let mut refused: Vec<(order::Position, String)> = Vec::new();
    let mut written = 0u64;
    while let Some(chunk) = sorted.next_chunk(CHUNK_RUNS)? {
        written += chunk.len() as u64;
        apply_chunk(engine, chunk, &names, &mut summary, &mut refused)?;
        sink.writing(written, runs);
    }
    tracing::debug!(written = ?started.elapsed(), "import written");
    refused.sort_by_key(|(position, _)| *position);
    summary.rejected += refused.len() as u64;
    for (position, reason) in refused {
        let name = &names[position.source()];
        sink.rejected(format!("{name}:{}: {reason}", position.line()));
    }
    Ok(summary)
}

/// Writes a chunk of runs in one transaction, each its own atomic unit; notes the refused.
fn apply_chunk(
    engine: &Engine,
    chunk: Vec<order::Item>,
    names: &[String],
    summary: &mut ImportSummary,
    refused: &mut Vec<(order::Position, String)>,
) -> Result<(), String> {
    let positions: Vec<order::Position> = chunk.iter().map(order::Item::position).collect();
    let ops: Vec<WriteOp> = chunk
        .into_iter()
        .map(|item| WriteOp::Report {
            runs: vec![item.run],
            at: item.at,
        })
        .collect();
    let outcomes = engine.apply_imports(&ops).map_err(|e| {
        let first = positions
            .iter()
            .min()
            .copied()
            .unwrap_or(order::Position::new(0, 0));
        format!(
            "import stopped at {} line {}: {e}",
            names[first.source()],
            first.line()
        )
    })?;
    for (position, outcome) in positions.into_iter().zip(outcomes) {
        match outcome {
            Ok(counts) => summary.counts.add(counts),
            Err(reason) => refused.push((position, reason.to_string())),
        }
    }
    Ok(())
}
