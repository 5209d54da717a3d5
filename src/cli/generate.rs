//! `runledger generate`: writes a synthetic workload as import lines, to try `runledger import`
//! at scale or to feed benchmarks.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::workload::{Workload, to_json_line};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Task runs to write.
    #[arg(long, default_value_t = 1_000_000)]
    pub runs: u64,
    /// Pipelines to spread them over.
    #[arg(long, default_value_t = 10)]
    pub pipelines: u64,
    /// Tasks per pipeline (task runs per pipeline run).
    #[arg(long, default_value_t = 4)]
    pub tasks: u64,
    /// Makes the UUIDs differ from another workload's.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write; standard output when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn run(args: GenerateArgs) -> Result<ExitCode, String> {
    if args.pipelines == 0 || args.tasks == 0 {
        return Err("--pipelines and --tasks must be at least 1".into());
    }
    let workload = Workload {
        pipelines: args.pipelines,
        tasks_per_pipeline: args.tasks,
        seed: args.seed,
        ..Workload::three_years(args.runs)
    };
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    for run in workload.task_runs() {
        writeln!(out, "{}", to_json_line(&run)).map_err(|e| format!("cannot write: {e}"))?;
    }
    out.flush().map_err(|e| format!("cannot write: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
